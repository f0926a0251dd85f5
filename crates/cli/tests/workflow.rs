//! The commands end to end on a tiny model: their output files and exit codes.

mod common;

use common::{ok, setup_sft};

#[test]
fn train_evaluate_sample_plot_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup_sft(d, 6, 3);
    for f in ["train.jsonl", "test.jsonl", "sft.jsonl", "task.json"] {
        assert!(d.join("data").join(f).exists(), "{f}");
    }

    // Training with JSON lines: one object per step on stdout.
    let out = ok(d, &["sft", "--config", "sft.toml", "--run", "runs/a", "--json"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[5]["step"], 6);
    assert_eq!(lines[5]["phase"], "sft");
    assert!(lines[5]["eval_accuracy"].is_number(), "{out}");
    for f in ["config.json", "tokenizer.json", "metrics.jsonl", "latest", "checkpoints/step-00000006.ckpt"] {
        assert!(d.join("runs/a").join(f).exists(), "{f}");
    }

    // Evaluation: a table on stdout and eval.json in the run.
    let out = ok(d, &["eval", "--model", "runs/a", "--data", "data/test.jsonl", "-k", "2"]);
    assert!(out.contains("accuracy (greedy)") && out.contains("pass@2"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/a/eval.json")).unwrap()).unwrap();
    assert_eq!(report["task"], "addition");
    assert_eq!(report["prompts"], 20);
    let acc = report["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));

    // Sampling: prompts from a file (plain and JSON lines) and from --prompt, in JSON.
    std::fs::write(d.join("prompts.txt"), "12+34=\n{\"prompt\": \"5+6=\"}\n").unwrap();
    let out = ok(
        d,
        &["sample", "--model", "runs/a", "--prompts", "prompts.txt", "-n", "2", "--max-new-tokens", "4"],
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().next().unwrap().starts_with("[0] 12+34="), "{out}");
    let out =
        ok(d, &["sample", "--model", "runs/a", "--prompt", "1+1=", "-t", "0", "--json", "--top-k", "3"]);
    let c: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["prompt"], "1+1=");
    assert!(c["logprobs"].is_array());
    // Greedy decoding is reproducible.
    assert_eq!(
        out,
        ok(d, &["sample", "--model", "runs/a", "--prompt", "1+1=", "-t", "0", "--json", "--top-k", "3"])
    );

    // Plots, two runs overlaid, both formats.
    ok(d, &["sft", "--config", "sft.toml", "--run", "runs/b", "--quiet", "--set", "run.seed=4"]);
    let out = ok(d, &["plot", "runs/a", "runs/b", "--out", "plots"]);
    assert!(out.contains("loss.svg") && out.contains("eval_accuracy.svg"), "{out}");
    let svg = std::fs::read_to_string(d.join("plots/loss.svg")).unwrap();
    assert!(["a", "b"].iter().all(|n| svg.lines().any(|l| l == *n)), "legend names both runs");
    ok(d, &["plot", "runs/a", "--format", "png"]);
    assert!(d.join("runs/a/plots/loss.png").exists());

    // Hugging Face export, then import as a model file, then sample from it.
    ok(d, &["export-hf", "--model", "runs/a", "--out", "hf"]);
    for f in ["config.json", "model.safetensors", "pglm-tokenizer.json"] {
        assert!(d.join("hf").join(f).exists(), "{f}");
    }
    ok(d, &["import-hf", "hf", "--out", "model.pglm", "--tokenizer", "hf/pglm-tokenizer.json"]);
    let from_file =
        ok(d, &["sample", "--model", "model.pglm", "--prompt", "1+1=", "-t", "0", "--json", "--top-k", "3"]);
    assert_eq!(from_file, out_of_run(d));
}

fn out_of_run(d: &std::path::Path) -> String {
    ok(d, &["sample", "--model", "runs/a", "--prompt", "1+1=", "-t", "0", "--json", "--top-k", "3"])
}

#[test]
fn tokenizer_and_pretraining_on_a_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let corpus: String = (0..200).map(|i| format!("the cat {i} sat on the mat. ")).collect();
    std::fs::write(d.join("corpus.txt"), &corpus).unwrap();
    let out = ok(d, &["tokenizer", "train", "corpus.txt", "--out", "tok/bpe.json", "--vocab-size", "300"]);
    assert!(out.contains(" tokens  tok/bpe.json"), "{out}");
    ok(d, &["tokenizer", "train", "corpus.txt", "--kind", "char", "--out", "tok/char.json"]);
    let config = r#"
[model]
vocab_size = 0
context_length = 32
n_layer = 1
n_head = 2
n_embd = 16
[data]
train = "corpus.txt"
holdout = 2
[tokenizer]
kind = "file"
path = "tok/bpe.json"
[batch]
batch_size = 4
seq_len = 32
[run]
steps = 3
eval_every = 0
"#;
    std::fs::write(d.join("pre.toml"), config).unwrap();
    ok(d, &["pretrain", "--config", "pre.toml", "--run", "pre", "--quiet"]);
    let metrics = std::fs::read_to_string(d.join("pre/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    assert!(metrics.lines().last().unwrap().contains("eval_loss"));
}

#[test]
fn a_hugging_face_directory_imports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/gpt2_tiny");
    let o = common::pglm(d, &["import-hf", fixture.to_str().unwrap(), "--out", "m/tiny.pglm"]);
    let (out, err) = common::text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("m/tiny.pglm") && err.contains("--tokenizer"), "{out}\n{err}");
    // No tokenizer in a bare GPT-2 directory: using the model says how to give one.
    let e = common::user_error(d, &["sample", "--model", "m/tiny.pglm", "--prompt", "hi"]);
    assert!(e.contains("--tokenizer"), "{e}");
    let e = common::user_error(d, &["import-hf", "m", "--out", "x.pglm"]);
    assert!(e.contains("config.json"), "{e}");
}
