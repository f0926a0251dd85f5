//! Configuration files: TOML, plus `--set key=value` overrides (dotted keys, values parsed as TOML),
//! deserialized into the trainer's config structs. Unknown keys are errors that name the file and
//! the key path and suggest the nearest valid key. `pglm config show` prints the effective
//! configuration with every default filled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::suggest::{nearest, parse_unknown_field};

/// `--config` and `--set`, shared by every command that reads a configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// The TOML configuration file (see docs/CONFIG.md; examples in configs/).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set run.steps=200 --set optim.lr=3e-4` (repeatable). The value is
    /// read as TOML (numbers, booleans, arrays, quoted strings); anything else is a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `pglm config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective configuration (file + overrides + defaults) as TOML.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// Which configuration the file is.
        #[arg(long, value_enum, default_value = "train")]
        kind: ConfigKind,
    },
}

/// The kinds of configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    /// Pretraining and SFT (`pglm pretrain`, `pglm sft`).
    Train,
    /// Policy-gradient RL (`pglm rl`).
    Rl,
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Show { config, kind } => {
            let text = match kind {
                ConfigKind::Train => {
                    let c: pglm_trainer::TrainConfig = load(config, &[])?;
                    c.validate()?;
                    to_toml(&c)?
                }
                ConfigKind::Rl => {
                    let c: pglm_trainer::rl::RlConfig = load(config, &[])?;
                    c.validate()?;
                    to_toml(&c)?
                }
            };
            print!("{text}");
            Ok(())
        }
    }
}

/// Where the table came from, for error messages.
struct Source<'a> {
    file: Option<&'a Path>,
    text: Option<&'a str>,
    sets: &'a [String],
}

impl Source<'_> {
    fn name(&self) -> String {
        let file = self.file.map_or_else(|| "the configuration".into(), |f| f.display().to_string());
        if self.sets.is_empty() { file } else { format!("{file} with --set overrides") }
    }
}

/// Reads `--config` (or an empty table), applies `extra` defaults for absent keys (such as the
/// data kind a command implies), then the `--set` overrides, and deserializes the result.
pub fn load<T: DeserializeOwned>(args: &ConfigArgs, extra: &[(&str, Value)]) -> Result<T> {
    let text = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?,
        ),
        None => None,
    };
    let mut table: Table = match (&text, &args.config) {
        (Some(t), Some(path)) => toml::from_str(t)
            .map_err(|e| anyhow!("{}{}: {}", path.display(), line_of(t, e.span()), e.message().trim_end()))?,
        _ => Table::new(),
    };
    let mut defaulted = false;
    for (key, value) in extra {
        if get_path(&table, key).is_none() {
            set_path(&mut table, key, value.clone()).map_err(|e| anyhow!("{e}"))?;
            defaulted = true;
        }
    }
    for s in &args.sets {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {s:?}: expected KEY=VALUE, such as run.steps=200"))?;
        set_path(&mut table, key.trim(), parse_value(raw.trim())).map_err(|e| anyhow!("--set {s:?}: {e}"))?;
    }
    // The user's own text is parsed when it is the whole story (line numbers then point into it).
    let text = if defaulted { None } else { text };
    let source = Source { file: args.config.as_deref(), text: text.as_deref(), sets: &args.sets };
    from_table(table, &source)
}

/// Deserializes, turning serde's messages into one line that names the key and suggests a fix.
fn from_table<T: DeserializeOwned>(table: Table, source: &Source) -> Result<T> {
    // Without overrides, parse the user's own text so that line numbers point into their file.
    let text = match (source.sets.is_empty(), source.text) {
        (true, Some(t)) => t.to_string(),
        _ => toml::to_string(&table).context("re-serializing the configuration")?,
    };
    let err = match toml::from_str::<T>(&text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let message = err.message().trim_end().to_string();
    let at = if source.text.is_some() && source.sets.is_empty() {
        line_of(&text, err.span())
    } else {
        String::new()
    };
    if let Some((field, candidates)) = parse_unknown_field(&message) {
        let path = find_key(&table, &field, "").unwrap_or_else(|| field.clone());
        let parent = path.rsplit_once('.').map(|(p, _)| format!("{p}.")).unwrap_or_default();
        let hint = match nearest(&field, candidates.iter().map(String::as_str)) {
            Some(best) => format!(" (did you mean `{parent}{best}`?)"),
            None if candidates.is_empty() => String::new(),
            None => format!(" (valid keys here: {})", candidates.join(", ")),
        };
        let origin = match source.sets.iter().find(|s| s.split('=').next().map(str::trim) == Some(&path)) {
            Some(s) => format!("--set {s}"),
            None => format!("{}{at}", source.name()),
        };
        bail!("{origin}: unknown key `{path}`{hint}; see docs/CONFIG.md for every key");
    }
    bail!("{}{at}: {message}; see docs/CONFIG.md for every key", source.name())
}

/// `:LINE` of the start of `span` in `text`, or nothing when the span is the whole document.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) if r.start > 0 || r.end < text.len() => {
            format!(":{}", text[..r.start.min(text.len())].matches('\n').count() + 1)
        }
        _ => String::new(),
    }
}

/// The dotted path of the first key named `name` in `table` (depth first).
fn find_key(table: &Table, name: &str, prefix: &str) -> Option<String> {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if k == name {
            return Some(path);
        }
        if let Value::Table(t) = v
            && let Some(p) = find_key(t, name, &path)
        {
            return Some(p);
        }
    }
    None
}

fn get_path<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut v = table.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// Sets `a.b.c = value`, creating the tables on the way.
fn set_path(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a valid key (expected names separated by dots)"));
    }
    let (last, parents) = parts.split_last().expect("split gives at least one part");
    let mut t = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = t.entry(p.to_string()).or_insert_with(|| Value::Table(Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is a value, not a section, so it has no key `{}`",
                parts[..=i].join("."),
                parts[i + 1]
            )
        })?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// A `--set` value: TOML if it parses as a TOML value (`3`, `1e-3`, `true`, `[0.9, 0.95]`,
/// `"text"`, `{ kind = "char" }`), else the raw text as a string (`data/addition/sft.jsonl`).
fn parse_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("the key just parsed"),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// A config as TOML, every default filled in; optional keys that are unset are listed in a
/// trailing comment (TOML has no null).
pub fn to_toml<T: Serialize>(config: &T) -> Result<String> {
    let mut json = serde_json::to_value(config).context("configs serialize")?;
    let mut unset = Vec::new();
    strip_nulls(&mut json, "", &mut unset);
    // The struct's own field order reads best (model first); a JSON null inside (such as a
    // task's default settings) has no TOML form, so fall back to the sorted JSON form then.
    let mut text = match toml::to_string(config) {
        Ok(t) => t,
        Err(_) => toml::to_string(&json).context("the configuration as TOML")?,
    };
    if !unset.is_empty() {
        text.push_str(&format!("\n# unset (optional): {}\n", unset.join(", ")));
    }
    Ok(text)
}

fn strip_nulls(v: &mut serde_json::Value, prefix: &str, unset: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = v {
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if map[&k].is_null() {
                map.remove(&k);
                unset.push(path);
            } else {
                strip_nulls(map.get_mut(&k).expect("a key of the map"), &path, unset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pglm_trainer::TrainConfig;

    const BASE: &str = r#"
[model]
vocab_size = 0
context_length = 32
n_layer = 1
n_head = 2
n_embd = 16

[data]
kind = "sft"
train = "train.jsonl"

[batch]
batch_size = 4
seq_len = 24

[run]
steps = 10
"#;

    fn load_text(text: &str, sets: &[&str]) -> Result<TrainConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let args = ConfigArgs { config: Some(path), sets: sets.iter().map(|s| s.to_string()).collect() };
        load(&args, &[])
    }

    #[test]
    fn overrides_apply_with_toml_types() {
        let c =
            load_text(BASE, &["run.steps=7", "optim.lr=3e-4", "optim.betas=[0.8, 0.9]", "data.holdout=2"])
                .unwrap();
        assert_eq!(c.run.steps, 7);
        assert_eq!(c.optim.lr, 3e-4);
        assert_eq!(c.optim.betas, (0.8, 0.9));
        assert_eq!(c.data.holdout, 2);
        let c = load_text(BASE, &["data.train=other/file.jsonl"]).unwrap();
        assert_eq!(c.data.train, PathBuf::from("other/file.jsonl"));
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let err = load_text(&BASE.replace("steps = 10", "stepz = 10"), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown key `run.stepz`") && err.contains("`run.steps`"), "{err}");
        assert!(err.contains("c.toml:"), "{err}");
        let err = load_text(BASE, &["optim.lrr=1"]).unwrap_err().to_string();
        assert!(err.starts_with("--set optim.lrr=1") && err.contains("`optim.lr`"), "{err}");
        let err = load_text(&format!("{BASE}\n[optimm]\nlr = 1.0\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("`optimm`") && err.contains("`optim`"), "{err}");
    }

    #[test]
    fn command_defaults_fill_absent_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, BASE.replace("kind = \"sft\"\n", "")).unwrap();
        let args = ConfigArgs { config: Some(path.clone()), sets: vec![] };
        let c: TrainConfig = load(&args, &[("data.kind", Value::from("text"))]).unwrap();
        assert_eq!(c.data.kind, pglm_trainer::DataKind::Text);
        std::fs::write(&path, BASE).unwrap();
        let c: TrainConfig = load(&args, &[("data.kind", Value::from("text"))]).unwrap();
        assert_eq!(c.data.kind, pglm_trainer::DataKind::Sft);
    }

    #[test]
    fn type_errors_name_the_line() {
        let err = load_text(&BASE.replace("steps = 10", "steps = \"ten\""), &[]).unwrap_err().to_string();
        assert!(err.contains("c.toml:") && err.contains("ten"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_set_syntax_is_explained() {
        let err = load_text(BASE, &["run.steps"]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
        let err = load_text(BASE, &["run.steps.x=1"]).unwrap_err().to_string();
        assert!(err.contains("not a section"), "{err}");
    }

    #[test]
    fn show_round_trips_with_defaults() {
        let c = load_text(BASE, &[]).unwrap();
        let text = to_toml(&c).unwrap();
        assert!(text.contains("warmup_steps = 100"), "{text}");
        assert!(text.contains("# unset (optional):") && text.contains("data.eval"), "{text}");
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    /// Every key path of `v` (objects are descended; `settings` is one value).
    fn leaf_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, x) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if x.is_object() && k != "settings" {
                    leaf_paths(x, &path, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn config_md_documents_every_key_and_its_example_parses() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONFIG.md")).unwrap();
        let mut c = load_text(BASE, &[]).unwrap();
        c.data.eval = Some("eval.jsonl".into());
        c.data.task = Some(toml::from_str("name = \"addition\"\ntest = \"t.jsonl\"").unwrap());
        c.run.stop = Some(pglm_trainer::StopCondition { metric: "eval_loss".into(), target: 1.0 });
        c.optim.decay_steps = Some(5);
        c.batch.micro_batch_size = Some(2);
        c.tokenizer = pglm_trainer::TokenizerConfig::File { path: "t.json".into() };
        let mut paths = Vec::new();
        leaf_paths(&serde_json::to_value(&c).unwrap(), "", &mut paths);
        assert!(paths.len() > 30, "{paths:?}");
        for p in paths {
            assert!(doc.contains(&format!("| `{p}` |")), "docs/CONFIG.md lacks a row for `{p}`");
        }
        let example = doc.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
        let parsed: TrainConfig = toml::from_str(example).unwrap();
        parsed.validate().unwrap();
    }
}
