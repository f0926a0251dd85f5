//! User mistakes: each gives one `error: ...` line saying what is wrong and what to do, and a
//! non-zero exit code; bad command-line syntax exits with 2 (clap's usage error).

mod common;

use common::{ok, pglm, setup_sft, text, user_error};

#[test]
fn bad_arguments_exit_with_usage_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--no-such-flag"][..], &["frobnicate"], &["sample"], &["plot"], &["data", "addition"]] {
        let o = pglm(dir.path(), args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("Usage:") || err.contains("usage:"), "{args:?}: {err}");
    }
    // A near-miss subcommand gets clap's suggestion.
    let (_, err) = text(&pglm(dir.path(), &["smaple"]));
    assert!(err.contains("sample"), "{err}");
}

#[test]
fn help_and_version_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["--help"]);
    assert!(out.contains("quickstart") && out.contains("sft"), "{out}");
    assert!(ok(dir.path(), &["--version"]).starts_with("pglm "));
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = user_error(dir.path(), &["sft", "--config", "nope.toml"]);
    assert!(e.contains("nope.toml"), "{e}");
    let e = user_error(dir.path(), &["sample", "--model", "runs/none", "--prompt", "1+1="]);
    assert!(e.contains("runs/none"), "{e}");
    let e = user_error(dir.path(), &["plot", "missing-run"]);
    assert!(e.contains("missing-run"), "{e}");
    let e = user_error(dir.path(), &["sft"]);
    assert!(e.contains("--config"), "{e}");
}

#[test]
fn config_mistakes_suggest_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    setup_sft(dir.path(), 4, 0);
    let e = user_error(dir.path(), &["sft", "--config", "sft.toml", "--set", "run.stepz=3"]);
    assert!(e.contains("run.stepz") && e.contains("did you mean `run.steps`"), "{e}");
    let bad = std::fs::read_to_string(dir.path().join("sft.toml")).unwrap().replace("n_embd", "n_embed");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let e = user_error(dir.path(), &["config", "show", "--config", "bad.toml"]);
    assert!(e.contains("bad.toml:") && e.contains("model.n_embed") && e.contains("`model.n_embd`"), "{e}");
    let e = user_error(dir.path(), &["sft", "--config", "sft.toml", "--set", "batch.seq_len=99"]);
    assert!(e.contains("batch.seq_len"), "{e}");
    let e = user_error(dir.path(), &["pretrain", "--config", "sft.toml"]);
    assert!(e.contains("pglm sft"), "{e}");
    let e = user_error(dir.path(), &["data", "additon", "--out", "d"]);
    assert!(e.contains("did you mean `addition`"), "{e}");
    let e = user_error(dir.path(), &["sample", "--model", "x", "--top-p", "0"]);
    assert!(e.contains("top_p"), "{e}");
}

#[test]
fn config_show_prints_defaults() {
    let dir = tempfile::tempdir().unwrap();
    setup_sft(dir.path(), 4, 0);
    let out = ok(dir.path(), &["config", "show", "--config", "sft.toml", "--set", "optim.lr=0.01"]);
    assert!(out.contains("lr = 0.01") && out.contains("weight_decay = 0.1"), "{out}");
    assert!(out.contains("steps = 4") && out.contains("[data.task]"), "{out}");
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    setup_sft(dir.path(), 2, 0);
    ok(dir.path(), &["sft", "--config", "sft.toml", "--run", "r", "--quiet"]);
    let e = user_error(dir.path(), &["sft", "--config", "sft.toml", "--run", "r"]);
    assert!(e.contains("--resume"), "{e}");
    let e = user_error(dir.path(), &["sft", "--run", "r", "--resume", "--set", "run.steps=9"]);
    assert!(e.contains("config.json"), "{e}");
    let e = user_error(dir.path(), &["sft", "--run", "elsewhere", "--resume"]);
    assert!(e.contains("elsewhere"), "{e}");
}

#[test]
fn a_corrupt_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    setup_sft(dir.path(), 2, 0);
    ok(dir.path(), &["sft", "--config", "sft.toml", "--run", "r", "--quiet"]);
    let latest = std::fs::read_to_string(dir.path().join("r/latest")).unwrap();
    let ckpt = dir.path().join("r").join(latest.trim());
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&ckpt, &bytes).unwrap();
    let e = user_error(dir.path(), &["sample", "--model", "r", "--prompt", "1+2="]);
    assert!(e.contains(ckpt.file_name().unwrap().to_str().unwrap()), "{e}");
    let e = user_error(dir.path(), &["sft", "--run", "r", "--resume"]);
    assert!(e.contains("step-"), "{e}");
    std::fs::write(&ckpt, b"garbage").unwrap();
    let e = user_error(dir.path(), &["eval", "--model", "r", "--data", "data/test.jsonl"]);
    assert!(e.contains("step-"), "{e}");
}
