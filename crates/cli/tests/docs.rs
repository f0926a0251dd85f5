//! docs/CLI.md stays true: its reference section is `pglm <command> --help` verbatim (rewrite it
//! with `PGLM_BLESS=1 cargo test -p pglm-cli --test docs`), and every command in its ```sh blocks
//! runs successfully, in order, in a fresh directory holding a copy of configs/.

mod common;

use std::path::{Path, PathBuf};

use common::{bin, text};

const MARKER: &str =
    "<!-- Everything below is `pglm <command> --help`, checked by crates/cli/tests/docs.rs. -->";

const COMMANDS: &[&[&str]] = &[
    &[],
    &["quickstart"],
    &["data"],
    &["tokenizer", "train"],
    &["pretrain"],
    &["sft"],
    &["rl"],
    &["sample"],
    &["eval"],
    &["plot"],
    &["import-hf"],
    &["export-hf"],
    &["config", "show"],
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> String {
    let mut s = String::from("## Reference\n\n");
    for cmd in COMMANDS {
        let o = bin().args(*cmd).arg("--help").output().unwrap();
        assert!(o.status.success());
        let title = std::iter::once("pglm").chain(cmd.iter().copied()).collect::<Vec<_>>().join(" ");
        s += &format!("### `{title}`\n\n```text\n{}```\n\n", text(&o).0);
    }
    s
}

#[test]
fn the_reference_is_the_help_text() {
    let path = repo().join("docs/CLI.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, tail) = doc.split_once(MARKER).expect("docs/CLI.md has the reference marker");
    let want = reference();
    if std::env::var_os("PGLM_BLESS").is_some() {
        std::fs::write(&path, format!("{head}{MARKER}\n\n{}", want.trim_end()) + "\n").unwrap();
        return;
    }
    assert_eq!(
        tail.trim(),
        want.trim(),
        "docs/CLI.md is out of date: run PGLM_BLESS=1 cargo test -p pglm-cli --test docs"
    );
}

/// Splits a command line into words, honouring single and double quotes.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[test]
fn every_example_in_cli_md_runs() {
    let doc = std::fs::read_to_string(repo().join("docs/CLI.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    for e in std::fs::read_dir(repo().join("configs")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), configs.join(e.file_name())).unwrap();
    }
    let mut ran = 0;
    for block in doc.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap();
        for line in
            block.lines().map(|l| l.split(" #").next().unwrap().trim()).filter(|l| l.starts_with("pglm "))
        {
            let w = words(line);
            let o = bin().args(&w[1..]).current_dir(dir.path()).output().unwrap();
            let (out, err) = text(&o);
            assert!(o.status.success(), "docs/CLI.md example failed: {line}\n{out}\n{err}");
            ran += 1;
        }
    }
    assert!(ran >= 5, "only {ran} examples found");
}

#[test]
fn words_honour_quotes() {
    assert_eq!(
        words(r#"pglm sample --prompt "12+34=" -t 0"#),
        ["pglm", "sample", "--prompt", "12+34=", "-t", "0"]
    );
    assert_eq!(words("a 'b c' \"\""), ["a", "b c", ""]);
}
