//! `pglm data TASK --out DIR`: a built-in task's dataset, by the same generator as
//! `cargo xtask data` (`pglm_rewards::dataset::render_dataset`): the same arguments give the
//! same bytes.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use pglm_rewards::dataset::{DataSpec, render_dataset, write_files};
use pglm_rewards::tasks::BUILTIN_TASKS;
use serde_json::{Map, Value};

use crate::progress::Output;
use crate::suggest::nearest;

/// Arguments of `pglm data`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Task settings (--set KEY=VALUE, see docs/REWARDS.md):\n  \
    addition/subtraction/multiplication: digits, digits_b\n  \
    countdown: min_count, max_count, max_number, max_target, prompt (compact|tinyzero)\n  \
    reverse/sort: min_len, max_len, alphabet\n  \
    sentiment: negation")]
pub struct Args {
    /// The task: addition, subtraction, multiplication, countdown, reverse, sort or sentiment.
    pub task: String,
    /// Output directory (train.jsonl, test.jsonl, sft.jsonl, task.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Training examples.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Test examples (default: max(1, n/10)).
    #[arg(long, value_name = "M")]
    pub test_n: Option<usize>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write sft_format.jsonl (well-formed but unchosen completions; countdown).
    #[arg(long)]
    pub format_sft: bool,
    /// A task setting, e.g. `--set digits=3` (repeatable; values read as TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The task's settings as JSON, from `--set` pairs.
fn settings(sets: &[String]) -> Result<Value> {
    let mut map = Map::new();
    for s in sets {
        let (k, v) =
            s.split_once('=').ok_or_else(|| anyhow!("--set {s:?}: expected KEY=VALUE, such as digits=3"))?;
        let v = match toml::from_str::<toml::Table>(&format!("v = {}", v.trim())) {
            Ok(mut t) => serde_json::to_value(t.remove("v")).expect("TOML values are JSON"),
            Err(_) => Value::String(v.trim().into()),
        };
        map.insert(k.trim().to_string(), v);
    }
    Ok(Value::Object(map))
}

/// Writes the dataset; returns the files written with their line counts.
pub fn generate(task: &str, spec: &DataSpec, settings: &Value, out: &Path) -> Result<Vec<(PathBuf, usize)>> {
    if !BUILTIN_TASKS.contains(&task) {
        let hint = nearest(task, BUILTIN_TASKS.iter().copied()).map(|n| format!(" (did you mean `{n}`?)"));
        bail!(
            "unknown task `{task}`{}; built-in tasks: {}",
            hint.unwrap_or_default(),
            BUILTIN_TASKS.join(", ")
        );
    }
    let task = pglm_rewards::builtin_task(task, settings)?;
    let files = render_dataset(&*task, spec)?;
    write_files(out, &files)?;
    Ok(files.iter().map(|(f, c)| (out.join(f), c.lines().count())).collect())
}

pub fn run(args: &Args, out: &Output) -> Result<()> {
    let spec = DataSpec {
        seed: args.seed,
        n_train: args.n,
        n_test: args.test_n.unwrap_or((args.n / 10).max(1)),
        format_sft: args.format_sft,
    };
    let written = generate(&args.task, &spec, &settings(&args.sets)?, &args.out)?;
    for (path, lines) in &written {
        if out.json() {
            println!("{}", serde_json::json!({"file": path, "lines": lines}));
        } else {
            println!("{lines:>8} lines  {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_typed() {
        let v = settings(&["digits=3".into(), "alphabet=abc".into(), "negation=false".into()]).unwrap();
        assert_eq!(v, serde_json::json!({"digits": 3, "alphabet": "abc", "negation": false}));
    }

    #[test]
    fn unknown_tasks_get_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DataSpec { seed: 0, n_train: 2, n_test: 1, format_sft: false };
        let err = generate("additon", &spec, &Value::Null, dir.path()).unwrap_err().to_string();
        assert!(err.contains("did you mean `addition`"), "{err}");
    }
}
