//! Datasets as JSON lines: generating train/test splits from a task, writing them byte for byte
//! reproducibly, and reading datasets written by users with errors that name the line and field.
//!
//! Schema (one JSON object per line): `prompt` (a string) and the reference fields the reward
//! reads, flat beside it: `{"prompt":"12+345=","answer":"357"}`. SFT files have `prompt` and
//! `completion`. Blank lines are skipped.

use crate::rng::Rng;
use crate::tasks::{Example, Task};
use crate::{Reward, RewardError};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::Path;

/// The generator streams: train, test and format-only completions never share random numbers.
const TRAIN_STREAM: u64 = 0;
const TEST_STREAM: u64 = 1;
const FORMAT_STREAM: u64 = 2;

/// Why a dataset could not be generated, written or read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A line is not valid JSON (or not UTF-8).
    #[error("{file}:{line}: not valid JSON: {message}")]
    Json { file: String, line: usize, message: String },
    /// A line is valid JSON but not an object.
    #[error("{file}:{line}: expected a JSON object, found {found}")]
    NotObject { file: String, line: usize, found: &'static str },
    /// A required field is absent.
    #[error("{file}:{line}: missing field `{field}`")]
    MissingField { file: String, line: usize, field: String },
    /// A field has the wrong JSON type.
    #[error("{file}:{line}: field `{field}` must be {expected}, found {found}")]
    FieldType { file: String, line: usize, field: String, expected: &'static str, found: &'static str },
    /// The reward cannot use a line's reference data.
    #[error("{file}:{line}: {error}")]
    Reference { file: String, line: usize, error: RewardError },
    /// The file has no examples.
    #[error("{file}: no examples")]
    Empty { file: String },
    /// The task cannot produce what was asked (for example too few distinct prompts).
    #[error("task {task}: {reason}")]
    Generation { task: String, reason: String },
}

/// A train/test split with no prompt in common.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Training examples (prompts may repeat, as when drawing with replacement).
    pub train: Vec<Example>,
    /// Test examples: distinct prompts, none of which appears in `train`.
    pub test: Vec<Example>,
}

/// Draws `n_test` distinct test prompts, then `n_train` training examples whose prompts are not
/// test prompts. Example `i` of each split comes from its own generator state
/// `Rng::for_index(seed, stream, i)`, so the result depends on nothing but the arguments.
pub fn split(task: &dyn Task, seed: u64, n_train: usize, n_test: usize) -> Result<Split, DatasetError> {
    let too_few = |what: &str, found: usize, wanted: usize| DatasetError::Generation {
        task: task.name().into(),
        reason: format!(
            "found only {found} of {wanted} {what} after many draws: the task has too few distinct prompts \
             for this size (ask for fewer examples or widen the task's settings)"
        ),
    };
    let budget = |n: usize| n.saturating_mul(50).saturating_add(1000) as u64;

    let mut test = Vec::with_capacity(n_test);
    let mut test_prompts = HashSet::with_capacity(n_test);
    let mut index = 0;
    while test.len() < n_test {
        if index >= budget(n_test) {
            return Err(too_few("distinct test prompts", test.len(), n_test));
        }
        let ex = task.sample(&mut Rng::for_index(seed, TEST_STREAM, index));
        index += 1;
        if test_prompts.insert(ex.prompt.clone()) {
            test.push(ex);
        }
    }

    let mut train = Vec::with_capacity(n_train);
    let mut index = 0;
    while train.len() < n_train {
        if index >= budget(n_train) {
            return Err(too_few("training examples outside the test set", train.len(), n_train));
        }
        let ex = task.sample(&mut Rng::for_index(seed, TRAIN_STREAM, index));
        index += 1;
        if !test_prompts.contains(&ex.prompt) {
            train.push(ex);
        }
    }
    Ok(Split { train, test })
}

/// Writes `v` as compact JSON with object keys sorted, so the bytes do not depend on how the
/// `serde_json` in the build orders maps.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One dataset line: `prompt` first, then the reference fields sorted by key.
pub fn dataset_line(prompt: &str, reference: &Value) -> Result<String, String> {
    let fields = reference.as_object().ok_or("the reference is not a JSON object")?;
    if fields.contains_key("prompt") {
        return Err("the reference has a field named `prompt`, which the dataset line uses".into());
    }
    let rest = canonical_json(reference);
    let prompt = Value::String(prompt.to_string()).to_string();
    Ok(if fields.is_empty() {
        format!("{{\"prompt\":{prompt}}}")
    } else {
        format!("{{\"prompt\":{prompt},{}", &rest[1..])
    })
}

/// One SFT line: `{"prompt": …, "completion": …}`.
pub fn sft_line(prompt: &str, completion: &str) -> String {
    let (p, c) = (Value::String(prompt.into()), Value::String(completion.into()));
    format!("{{\"prompt\":{p},\"completion\":{c}}}")
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct DataSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Training examples.
    pub n_train: usize,
    /// Test examples.
    pub n_test: usize,
    /// Also write `sft_format.jsonl` (tasks with format-only completions, such as countdown).
    pub format_sft: bool,
}

/// The files of a dataset, as (file name, contents), in writing order:
/// `train.jsonl`, `test.jsonl`, `sft.jsonl` (train prompts with correct completions),
/// `sft_format.jsonl` (if asked: train prompts with well-formed but unchosen completions) and
/// `task.json` (the task, its settings, its reward and this spec). Same spec, same bytes.
pub fn render_dataset(task: &dyn Task, spec: &DataSpec) -> Result<Vec<(String, String)>, DatasetError> {
    let Split { train, test } = split(task, spec.seed, spec.n_train, spec.n_test)?;
    let bad = |reason: String| DatasetError::Generation { task: task.name().into(), reason };
    let lines = |examples: &[Example]| -> Result<String, DatasetError> {
        let mut out = String::new();
        for ex in examples {
            out.push_str(&dataset_line(&ex.prompt, &ex.reference).map_err(bad)?);
            out.push('\n');
        }
        Ok(out)
    };
    let mut files =
        vec![("train.jsonl".to_string(), lines(&train)?), ("test.jsonl".to_string(), lines(&test)?)];
    files.push((
        "sft.jsonl".into(),
        train.iter().map(|ex| sft_line(&ex.prompt, &ex.completion) + "\n").collect(),
    ));
    if spec.format_sft {
        let mut out = String::new();
        for (i, ex) in train.iter().enumerate() {
            let mut rng = Rng::for_index(spec.seed, FORMAT_STREAM, i as u64);
            if let Some(c) = task.format_completion(ex, &mut rng) {
                out.push_str(&sft_line(&ex.prompt, &c));
                out.push('\n');
            }
        }
        if out.is_empty() && !train.is_empty() {
            return Err(bad("this task has no format-only completions (drop the format SFT option)".into()));
        }
        files.push(("sft_format.jsonl".into(), out));
    }
    let meta = serde_json::json!({
        "task": task.name(),
        "config": task.config(),
        "reward": task.reward().name(),
        "seed": spec.seed,
        "n_train": spec.n_train,
        "n_test": spec.n_test,
        "format_sft": spec.format_sft,
    });
    files.push(("task.json".into(), canonical_json(&meta) + "\n"));
    Ok(files)
}

/// Writes `files` into `dir` (created if needed).
pub fn write_files(dir: &Path, files: &[(String, String)]) -> Result<(), DatasetError> {
    let io = |path: &Path, error| DatasetError::Io { path: path.display().to_string(), error };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// One example of a user's dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its 1-based line number in the file.
    pub line: usize,
    /// The prompt.
    pub prompt: String,
    /// Every other field of the line, as one object.
    pub reference: Value,
}

/// One example of an SFT file.
#[derive(Clone, Debug, PartialEq)]
pub struct SftRecord {
    /// Its 1-based line number in the file.
    pub line: usize,
    /// The prompt.
    pub prompt: String,
    /// The target completion.
    pub completion: String,
}

/// (1-based line number, JSON object) for each non-blank line.
type NumberedObjects = Vec<(usize, Map<String, Value>)>;

/// The non-blank lines of `bytes` as JSON objects; `file` names the source in errors.
fn objects(bytes: &[u8], file: &str) -> Result<NumberedObjects, DatasetError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // a UTF-8 byte-order mark
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let json_err = |message: String| DatasetError::Json { file: file.into(), line, message };
        let text = std::str::from_utf8(raw).map_err(|e| json_err(format!("not UTF-8 ({e})")))?;
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text).map_err(|e| json_err(e.to_string()))? {
            Value::Object(map) => out.push((line, map)),
            other => {
                return Err(DatasetError::NotObject {
                    file: file.into(),
                    line,
                    found: crate::reference::kind(&other),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(DatasetError::Empty { file: file.into() });
    }
    Ok(out)
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &str,
    file: &str,
    line: usize,
) -> Result<String, DatasetError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(DatasetError::FieldType {
            file: file.into(),
            line,
            field: field.into(),
            expected: "a string",
            found: crate::reference::kind(&other),
        }),
        None => Err(DatasetError::MissingField { file: file.into(), line, field: field.into() }),
    }
}

/// Parses a dataset (see the module docs for the schema); `file` names it in errors.
pub fn parse_dataset(bytes: &[u8], file: &str) -> Result<Vec<Record>, DatasetError> {
    objects(bytes, file)?
        .into_iter()
        .map(|(line, mut map)| {
            let prompt = take_string(&mut map, "prompt", file, line)?;
            Ok(Record { line, prompt, reference: Value::Object(map) })
        })
        .collect()
}

/// Parses a dataset and checks every line's reference with `reward`, so that missing or
/// mistyped fields are reported at load time with the line and field named.
pub fn parse_dataset_for(bytes: &[u8], file: &str, reward: &dyn Reward) -> Result<Vec<Record>, DatasetError> {
    let records = parse_dataset(bytes, file)?;
    for r in &records {
        reward.check_reference(&r.reference).map_err(|error| DatasetError::Reference {
            file: file.into(),
            line: r.line,
            error,
        })?;
    }
    Ok(records)
}

/// Parses an SFT file (`prompt` and `completion` strings on each line).
pub fn parse_sft(bytes: &[u8], file: &str) -> Result<Vec<SftRecord>, DatasetError> {
    objects(bytes, file)?
        .into_iter()
        .map(|(line, mut map)| {
            let prompt = take_string(&mut map, "prompt", file, line)?;
            let completion = take_string(&mut map, "completion", file, line)?;
            Ok(SftRecord { line, prompt, completion })
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|error| DatasetError::Io { path: path.display().to_string(), error })
}

/// Reads a dataset file and checks it against `reward` (see [`parse_dataset_for`]).
pub fn read_dataset(path: &Path, reward: &dyn Reward) -> Result<Vec<Record>, DatasetError> {
    parse_dataset_for(&read(path)?, &path.display().to_string(), reward)
}

/// Reads an SFT file (see [`parse_sft`]).
pub fn read_sft(path: &Path) -> Result<Vec<SftRecord>, DatasetError> {
    parse_sft(&read(path)?, &path.display().to_string())
}

#[cfg(test)]
mod tests;
