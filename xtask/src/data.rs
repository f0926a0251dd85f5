//! `cargo xtask data <task> --n N --seed S --out DIR [task settings]`: writes a task's dataset.
//!
//! Files: `train.jsonl`, `test.jsonl` (no test prompt appears in train), `sft.jsonl` (train
//! prompts with correct completions), `sft_format.jsonl` with `--format-sft` (countdown: equations
//! that use each number once but are not chosen to hit the target) and `task.json`. The same
//! arguments always give the same bytes.

use anyhow::{Context, Result, bail};
use pglm_rewards::dataset::{DataSpec, render_dataset, write_files};
use pglm_rewards::tasks::BUILTIN_TASKS;
use serde_json::{Map, Value};
use std::path::PathBuf;

const USAGE: &str =
    "usage: cargo xtask data <task> --out DIR [--n N] [--test-n M] [--seed S] [--format-sft] [settings]
  tasks: addition subtraction multiplication countdown reverse sort sentiment
  --n N          training examples (default 1000); --test-n M test examples (default max(1, N/10))
  --seed S       seed of every random choice (default 0)
  settings (any other --key value goes to the task's settings, dashes read as underscores):
    arithmetic:  --digits D [--digits-b D]
    countdown:   --numbers 3|4|3-4  --max-number K  --max-target T  --prompt compact|tinyzero
    reverse/sort: --min-len A --max-len B --alphabet CHARS
    sentiment:   --no-negation";

/// A settings value: a number or boolean if it reads as one, else the text.
fn setting_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

/// The value after `--key`, or an error naming the flag.
fn value<'a>(raw: Option<&'a String>, key: &str, what: &str) -> Result<&'a String> {
    raw.with_context(|| format!("--{key} needs {what}\n{USAGE}"))
}

/// The value after `--key` as a number.
fn number<T: std::str::FromStr>(raw: Option<&String>, key: &str) -> Result<T> {
    let raw = value(raw, key, "a number")?;
    raw.parse().ok().with_context(|| format!("--{key} needs a number, got {raw:?}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let mut task = None;
    let (mut n_train, mut n_test, mut seed, mut out) = (1000usize, None, 0u64, None);
    let mut format_sft = false;
    let mut config = Map::new();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let Some(key) = arg.strip_prefix("--") else {
            if task.replace(arg.clone()).is_some() {
                bail!("more than one task given\n{USAGE}");
            }
            continue;
        };
        match key {
            "n" => n_train = number(it.next(), key)?,
            "test-n" => n_test = Some(number(it.next(), key)?),
            "seed" => seed = number(it.next(), key)?,
            "out" => out = Some(PathBuf::from(value(it.next(), key, "a directory")?)),
            "format-sft" => format_sft = true,
            "help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "numbers" => {
                let v = value(it.next(), key, "3, 4 or 3-4")?;
                let (lo, hi) = v.split_once('-').unwrap_or((v, v));
                let count = |s: &str| {
                    s.parse::<u32>().with_context(|| format!("--numbers {v:?}: expected 3, 4 or 3-4"))
                };
                config.insert("min_count".into(), count(lo)?.into());
                config.insert("max_count".into(), count(hi)?.into());
            }
            setting => {
                // A flag with no value (the next argument is another flag, or none) is `true`.
                let v = match it.next_if(|next| !next.starts_with("--")) {
                    Some(raw) => setting_value(raw),
                    None => Value::Bool(true),
                };
                config.insert(setting.replace('-', "_"), v);
            }
        }
    }
    let Some(name) = task else { bail!("no task given (one of: {})\n{USAGE}", BUILTIN_TASKS.join(", ")) };
    let Some(out) = out else { bail!("--out DIR is required\n{USAGE}") };
    let task = pglm_rewards::builtin_task(&name, &Value::Object(config))?;
    let spec = DataSpec { seed, n_train, n_test: n_test.unwrap_or((n_train / 10).max(1)), format_sft };
    let files = render_dataset(&*task, &spec)?;
    write_files(&out, &files)?;
    for (file, contents) in &files {
        println!("{:>8} lines  {}", contents.lines().count(), out.join(file).display());
    }
    Ok(())
}
