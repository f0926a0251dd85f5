//! `metrics.jsonl`: one JSON object per optimizer step. Field names are documented in
//! `docs/METRICS.md` and are stable.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::run_dir::write_atomically;

/// The metrics of one step (non-finite values are written as `null`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps completed, this one included (1-based).
    pub step: u64,
    /// Mean cross-entropy over the step's loss tokens (nats/token), before the update.
    pub loss: Option<f64>,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: Option<f64>,
    /// True when the guard skipped the update (non-finite loss or gradient norm).
    pub skipped: bool,
    /// Non-finite steps so far in the run.
    pub nonfinite_total: u64,
    /// Positions fed to the model this step (padding included).
    pub tokens: u64,
    /// Targets that counted in the loss this step.
    pub loss_tokens: u64,
    /// Data epoch at the end of the step (completed passes over the training data).
    pub epoch: u64,
    /// `tokens` per second of this step's wall time (wall-clock: varies between runs).
    pub tokens_per_sec: f64,
    /// Seconds since the run started, resumed runs included (wall-clock: varies between runs).
    pub elapsed_s: f64,
    /// Held-out loss, when evaluated at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Fraction of task test prompts whose greedy completion scores 1, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
    /// Mean reward of the greedy completions (scorable ones only), when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_reward: Option<f64>,
}

/// The fields that depend on wall-clock time; everything else is reproducible bit for bit.
pub const WALL_CLOCK_FIELDS: &[&str] = &["tokens_per_sec", "elapsed_s"];

/// `Some(x)` for finite `x`, else `None` (JSON has no NaN).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Appends JSON lines (metrics, tables) to a file.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let file =
            OpenOptions::new().create(true).append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(MetricsWriter { path: path.into(), file })
    }

    /// Writes one line (a single `write` call, so a crash never leaves half a line).
    pub fn write<T: Serialize>(&mut self, m: &T) -> Result<(), TrainError> {
        self.write_all(std::slice::from_ref(m))
    }

    /// Writes `rows` as lines in a single `write` call.
    pub fn write_all<T: Serialize>(&mut self, rows: &[T]) -> Result<(), TrainError> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r).expect("rows serialize to JSON"));
            text.push('\n');
        }
        self.file.write_all(text.as_bytes()).map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads every line of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, TrainError> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let m = serde_json::from_str(&line)
            .map_err(|e| TrainError::Json { path: path.into(), message: format!("line {}: {e}", i + 1) })?;
        out.push(m);
    }
    Ok(out)
}

/// Drops the lines whose `step` field is after `step` (those of steps a resumed run will redo),
/// and any torn last line. Works for any JSON-lines file keyed by `step`.
pub fn truncate_after(path: &Path, step: u64) -> Result<(), TrainError> {
    #[derive(Deserialize)]
    struct Step {
        step: u64,
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut kept = String::new();
    for line in text.split_inclusive('\n') {
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Step>(line.trim_end()) {
            Ok(m) if complete && m.step <= step => kept.push_str(line),
            _ => break,
        }
    }
    write_atomically(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&path).unwrap();
        for step in 1..=5 {
            let m = StepMetrics {
                step,
                loss: finite(if step == 3 { f64::NAN } else { 0.1 * step as f64 }),
                eval_loss: (step == 4).then_some(1.5),
                ..Default::default()
            };
            w.write(&m).unwrap();
        }
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"step\":6,").unwrap();
        truncate_after(&path, 4).unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[2].loss, None);
        assert_eq!(back[3].eval_loss, Some(1.5));
        assert_eq!(back[1].loss, Some(0.2));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.lines().next().unwrap().contains("eval_loss"), "{text}");
    }
}
