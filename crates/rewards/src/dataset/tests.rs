//! Splits, reproducible bytes, and clear errors on malformed user data.

use super::*;
use crate::tasks::builtin_task;
use crate::{Countdown, ExactMatch};
use serde_json::json;

fn spec(seed: u64, n_train: usize, n_test: usize, format_sft: bool) -> DataSpec {
    DataSpec { seed, n_train, n_test, format_sft }
}

#[test]
fn splits_are_disjoint_and_reproducible() {
    for name in crate::tasks::BUILTIN_TASKS {
        let task = builtin_task(name, &Value::Null).unwrap();
        let s = split(&*task, 5, 300, 40).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (300, 40));
        let test: HashSet<&str> = s.test.iter().map(|e| e.prompt.as_str()).collect();
        assert_eq!(test.len(), 40, "{name}: test prompts repeat");
        assert!(s.train.iter().all(|e| !test.contains(e.prompt.as_str())), "{name}: test prompt in train");
        assert_eq!(split(&*task, 5, 300, 40).unwrap(), s);
        assert_ne!(split(&*task, 6, 300, 40).unwrap(), s);
    }
}

#[test]
fn tiny_prompt_spaces_fail_clearly() {
    // One-digit addition has only 100 prompts.
    let task = builtin_task("addition", &json!({"digits": 1})).unwrap();
    let e = split(&*task, 0, 10, 101).unwrap_err().to_string();
    assert!(e.contains("too few distinct prompts"), "{e}");
    let s = split(&*task, 0, 500, 90).unwrap();
    assert_eq!(s.train.len(), 500);
    let e = split(&*task, 0, 10, 100).unwrap_err().to_string();
    assert!(e.contains("outside the test set"), "{e}");
}

#[test]
fn rendering_is_byte_stable_and_parses_back() {
    let task = builtin_task("countdown", &Value::Null).unwrap();
    let files = render_dataset(&*task, &spec(1, 50, 10, true)).unwrap();
    assert_eq!(files, render_dataset(&*task, &spec(1, 50, 10, true)).unwrap());
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["train.jsonl", "test.jsonl", "sft.jsonl", "sft_format.jsonl", "task.json"]);
    let train = parse_dataset_for(files[0].1.as_bytes(), "train.jsonl", &Countdown::new()).unwrap();
    assert_eq!(train.len(), 50);
    assert!(files[0].1.lines().all(|l| l.starts_with("{\"prompt\":\"Make ") && l.contains(",\"numbers\":[")));
    let sft = parse_sft(files[2].1.as_bytes(), "sft.jsonl").unwrap();
    assert_eq!(sft.len(), 50);
    assert_eq!(sft[0].prompt, train[0].prompt);
    let fmt = parse_sft(files[3].1.as_bytes(), "sft_format.jsonl").unwrap();
    assert_eq!(fmt.len(), 50);
    let meta: Value = serde_json::from_str(&files[4].1).unwrap();
    assert_eq!(meta["reward"], "countdown");
    let rebuilt = builtin_task(meta["task"].as_str().unwrap(), &meta["config"]).unwrap();
    assert_eq!(rebuilt.config(), task.config());

    let add = builtin_task("addition", &Value::Null).unwrap();
    let e = render_dataset(&*add, &spec(1, 5, 1, true)).unwrap_err().to_string();
    assert!(e.contains("format-only"), "{e}");
}

#[test]
fn canonical_lines() {
    let v = json!({"target": 24, "numbers": [1, 2], "note": "a\"b", "nested": {"z": 1, "a": null}});
    assert_eq!(
        canonical_json(&v),
        r#"{"nested":{"a":null,"z":1},"note":"a\"b","numbers":[1,2],"target":24}"#
    );
    assert_eq!(dataset_line("1+1=", &json!({"answer": "2"})).unwrap(), r#"{"prompt":"1+1=","answer":"2"}"#);
    assert_eq!(dataset_line("x", &json!({})).unwrap(), r#"{"prompt":"x"}"#);
    assert!(dataset_line("x", &json!({"prompt": 1})).is_err());
    assert_eq!(sft_line("a\nb", "c"), r#"{"prompt":"a\nb","completion":"c"}"#);
}

#[test]
fn user_datasets_report_line_and_field() {
    let ok = b"\xEF\xBB\xBF{\"prompt\": \"2+2=\", \"answer\": \"4\", \"id\": 7}\n\n  \n{\"prompt\": \"1+1=\", \"answer\": 2}\n";
    let recs = parse_dataset_for(ok, "mine.jsonl", &ExactMatch::new()).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].line, recs[1].line), (1, 4));
    assert_eq!(recs[0].reference, json!({"answer": "4", "id": 7}));

    let cases: [(&[u8], &str); 8] = [
        (
            b"{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\", \"answer\": \"1\"",
            "mine.jsonl:2: not valid JSON",
        ),
        (b"[1, 2]\n", "mine.jsonl:1: expected a JSON object, found an array"),
        (b"{\"answer\": \"1\"}\n", "mine.jsonl:1: missing field `prompt`"),
        (
            b"{\"prompt\": 5, \"answer\": \"1\"}\n",
            "mine.jsonl:1: field `prompt` must be a string, found a number",
        ),
        (
            b"{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\"}\n",
            "mine.jsonl:2: reward `exact_match`: reference field `answer`: missing",
        ),
        (
            b"{\"prompt\": \"a\", \"answer\": [1]}\n",
            "mine.jsonl:1: reward `exact_match`: reference field `answer`: expected a string or a number, found an array",
        ),
        (b"{\"prompt\": \"a\xff\", \"answer\": \"1\"}\n", "mine.jsonl:1: not valid JSON: not UTF-8"),
        (b"\n \n", "mine.jsonl: no examples"),
    ];
    for (text, want) in cases {
        let e = parse_dataset_for(text, "mine.jsonl", &ExactMatch::new()).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
    }
    let e = parse_dataset_for(
        b"{\"prompt\": \"a\", \"numbers\": [1, \"2\"], \"target\": 3}",
        "cd.jsonl",
        &Countdown::new(),
    );
    let e = e.unwrap_err().to_string();
    assert!(e.contains("cd.jsonl:1") && e.contains("`numbers`") && e.contains("item 1"), "{e}");
    let e = parse_sft(b"{\"prompt\": \"a\"}", "sft.jsonl").unwrap_err().to_string();
    assert_eq!(e, "sft.jsonl:1: missing field `completion`");
}

#[test]
fn files_are_written_and_read_back() {
    let dir = std::env::temp_dir().join(format!("pglm-rewards-test-{}", std::process::id()));
    let task = builtin_task("sort", &Value::Null).unwrap();
    let files = render_dataset(&*task, &spec(3, 20, 5, false)).unwrap();
    write_files(&dir, &files).unwrap();
    let back = read_dataset(&dir.join("test.jsonl"), &*task.reward()).unwrap();
    assert_eq!(back.len(), 5);
    assert_eq!(read_sft(&dir.join("sft.jsonl")).unwrap().len(), 20);
    let e = read_sft(&dir.join("missing.jsonl")).unwrap_err().to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
