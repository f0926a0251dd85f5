//! Running the `pglm` binary as a user would, in a temporary directory.

#![allow(dead_code)] // each test file uses a different part

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pglm"))
}

/// Runs `pglm args...` in `dir` and returns its output.
pub fn pglm(dir: &Path, args: &[&str]) -> Output {
    bin().args(args).current_dir(dir).output().expect("the pglm binary runs")
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Asserts success and returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = pglm(dir, args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "pglm {args:?} failed ({:?}):\n{out}\n{err}", o.status);
    out
}

/// Asserts a user error: exit code 1, and stderr is one line `error: ...` (no backtrace, no panic).
/// Returns that line.
pub fn user_error(dir: &Path, args: &[&str]) -> String {
    let o = pglm(dir, args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "pglm {args:?}: expected exit code 1:\n{out}\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("error: "), "pglm {args:?}: stderr should end with `error: ...`:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    last.to_string()
}

/// A tiny SFT config over `data/sft.jsonl` (2-digit addition), with `steps` steps.
pub fn tiny_sft_config(steps: u64, checkpoint_every: u64) -> String {
    format!(
        r#"
[model]
vocab_size = 0
context_length = 16
n_layer = 1
n_head = 2
n_embd = 16

[data]
kind = "sft"
train = "data/sft.jsonl"

[data.task]
name = "addition"
settings = {{ digits = 2 }}
test = "data/test.jsonl"
examples = 8
max_new_tokens = 4

[optim]
warmup_steps = 2

[batch]
batch_size = 8
seq_len = 15

[run]
steps = {steps}
eval_every = 0
checkpoint_every = {checkpoint_every}
seed = 3
"#
    )
}

/// Writes 2-digit addition data into `dir/data` and the tiny config into `dir/sft.toml`.
pub fn setup_sft(dir: &Path, steps: u64, checkpoint_every: u64) {
    ok(dir, &["data", "addition", "--n", "200", "--test-n", "20", "--set", "digits=2", "--out", "data"]);
    std::fs::write(dir.join("sft.toml"), tiny_sft_config(steps, checkpoint_every)).unwrap();
}
