//! The training config: one serde struct with a section per concern. Unknown fields are errors, so
//! a typo in a TOML file fails loudly instead of silently training with a default.

use std::path::PathBuf;

use pglm_autograd::optim::LrSchedule;
use pglm_model::GptConfig;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Everything a training run is started with (saved as `config.json` in the run directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model's shape. `vocab_size = 0` means "the tokenizer's vocabulary size".
    pub model: GptConfig,
    /// What to train on.
    pub data: DataConfig,
    /// How text becomes token ids.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// AdamW, its schedule, and clipping.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Batch geometry.
    pub batch: BatchConfig,
    /// Length, evaluation, checkpoints, seeds, guard and stop condition.
    #[serde(default)]
    pub run: RunConfig,
}

/// The kind of training data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// A plain-text corpus: next-token prediction on every position.
    Text,
    /// JSON lines with `prompt` and `completion`: the loss counts only the completion.
    Sft,
}

/// Where the data is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `text` or `sft`.
    pub kind: DataKind,
    /// Training file (a text corpus, or an SFT JSONL file).
    pub train: PathBuf,
    /// Held-out file of the same kind, for the evaluation loss.
    #[serde(default)]
    pub eval: Option<PathBuf>,
    /// Without `eval`: hold out this many training sequences (the last ones of the file) for it.
    #[serde(default)]
    pub holdout: usize,
    /// A task whose test prompts are greedy-decoded and scored at each evaluation.
    #[serde(default)]
    pub task: Option<TaskEvalConfig>,
}

/// Task accuracy: greedy completions of a task's test prompts, scored by the task's reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEvalConfig {
    /// A built-in task name (`addition`, ...).
    pub name: String,
    /// The task's settings (as in its `task.json`); `null` for the defaults.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// The test file (`prompt` plus reference fields, as `cargo xtask data` writes `test.jsonl`).
    pub test: PathBuf,
    /// How many test prompts to decode (the first ones of the file).
    #[serde(default = "default_task_examples")]
    pub examples: usize,
    /// Longest completion, in tokens.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
}

fn default_task_examples() -> usize {
    200
}

fn default_max_new_tokens() -> usize {
    16
}

/// How the tokenizer is obtained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TokenizerConfig {
    /// A character tokenizer over the characters of the training file.
    #[default]
    Char,
    /// A tokenizer saved as JSON (`Tokenizer::save_json`).
    File {
        /// The JSON file.
        path: PathBuf,
    },
}

/// The shape of the learning-rate decay after the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayShape {
    /// Half a cosine from `lr` to `min_lr`.
    Cosine,
    /// A straight line from `lr` to `min_lr`.
    Linear,
    /// No warmup, no decay: `lr` throughout.
    Constant,
}

/// AdamW (decay on matrices and embeddings only), schedule and clipping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// Step at which the decay reaches `min_lr`; `None` means `run.steps`.
    pub decay_steps: Option<u64>,
    /// Decay shape.
    pub schedule: DecayShape,
    /// Decoupled weight decay λ (applied to tensors of rank ≥ 2 only).
    pub weight_decay: f64,
    /// Adam's (β1, β2).
    pub betas: (f64, f64),
    /// Adam's ε.
    pub eps: f64,
    /// Global gradient-norm clipping threshold; `None` disables clipping (the norm is still logged).
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    /// nanoGPT's choices: λ = 0.1, β = (0.9, 0.95), clip 1.0, min_lr = lr / 10.
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            decay_steps: None,
            schedule: DecayShape::Cosine,
            weight_decay: 0.1,
            betas: (0.9, 0.95),
            eps: 1e-8,
            grad_clip: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// The schedule for a run of `steps` steps.
    pub fn schedule(&self, steps: u64) -> LrSchedule {
        let decay_steps = self.decay_steps.unwrap_or(steps);
        let (max_lr, min_lr, warmup_steps) = (self.lr, self.min_lr, self.warmup_steps);
        match self.schedule {
            DecayShape::Cosine => LrSchedule::WarmupCosine { max_lr, min_lr, warmup_steps, decay_steps },
            DecayShape::Linear => LrSchedule::WarmupLinear { max_lr, min_lr, warmup_steps, decay_steps },
            DecayShape::Constant => LrSchedule::Constant { lr: max_lr },
        }
    }
}

/// Sequences per step and how they are split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per forward/backward pass; must divide `batch_size`. `None` = `batch_size`.
    #[serde(default)]
    pub micro_batch_size: Option<usize>,
    /// Training context in tokens (at most `model.context_length`).
    pub seq_len: usize,
}

impl BatchConfig {
    /// The micro-batch size, defaulted.
    pub fn micro(&self) -> usize {
        self.micro_batch_size.unwrap_or(self.batch_size)
    }
}

/// When to stop early: an evaluation metric reaching a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopCondition {
    /// `eval_loss` (stop when ≤ target) or `eval_accuracy` / `eval_reward` (stop when ≥ target).
    pub metric: String,
    /// The target value.
    pub target: f64,
}

/// The metrics a [`StopCondition`] may name.
pub const STOP_METRICS: &[&str] = &["eval_loss", "eval_accuracy", "eval_reward"];

/// Run length, evaluation, checkpoints, seed and guard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Step budget (optimizer steps).
    pub steps: u64,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Batches of the held-out data per evaluation (each `batch.batch_size` sequences).
    pub eval_batches: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Seed of the initial weights, the data order and dropout.
    pub seed: u64,
    /// Stop with an error after this many non-finite steps in a row.
    pub max_nonfinite_in_a_row: u32,
    /// Stop early when an evaluation metric reaches a target.
    pub stop: Option<StopCondition>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            steps: 1000,
            eval_every: 100,
            eval_batches: 4,
            checkpoint_every: 200,
            keep_checkpoints: 2,
            seed: 1337,
            max_nonfinite_in_a_row: 5,
            stop: None,
        }
    }
}

impl OptimConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, expected: String| Err(TrainError::config(field, expected));
        let o = self;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optim.lr", format!("a positive number, got {}", o.lr));
        }
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
            return bad("optim.min_lr", format!("between 0 and optim.lr = {}, got {}", o.lr, o.min_lr));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad("optim.weight_decay", format!("a non-negative number, got {}", o.weight_decay));
        }
        let (b1, b2) = o.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad("optim.betas", format!("two numbers in [0, 1), got ({b1}, {b2})"));
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad("optim.eps", format!("a positive number, got {}", o.eps));
        }
        if let Some(c) = o.grad_clip
            && c.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad("optim.grad_clip", format!("a positive number (or absent), got {c}"));
        }

        Ok(())
    }
}

impl RunConfig {
    /// Checks every field, naming the first bad one; a stop condition may name `stop_metrics`.
    pub fn validate(&self, stop_metrics: &[&str]) -> Result<(), TrainError> {
        let bad = |field: &str, expected: String| Err(TrainError::config(field, expected));
        let r = self;
        if r.steps == 0 {
            return bad("run.steps", "at least 1".into());
        }
        if r.keep_checkpoints == 0 {
            return bad("run.keep_checkpoints", "at least 1".into());
        }
        if r.max_nonfinite_in_a_row == 0 {
            return bad("run.max_nonfinite_in_a_row", "at least 1".into());
        }
        if let Some(stop) = &r.stop {
            if !stop_metrics.contains(&stop.metric.as_str()) {
                return bad("run.stop.metric", format!("one of {stop_metrics:?}, got {:?}", stop.metric));
            }
            if !stop.target.is_finite() {
                return bad("run.stop.target", format!("a finite number, got {}", stop.target));
            }
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), TrainError> {
        let mut model = self.model.clone();
        if model.vocab_size == 0 {
            model.vocab_size = 1; // filled in from the tokenizer later
        }
        model.validate().map_err(|e| match e {
            pglm_model::ModelError::Config { field, expected } => {
                TrainError::config(format!("model.{field}"), expected)
            }
            other => TrainError::Model(other),
        })?;
        let bad = |field: &str, expected: String| Err(TrainError::config(field, expected));

        let b = &self.batch;
        if b.batch_size == 0 {
            return bad("batch.batch_size", "at least 1".into());
        }
        let micro = b.micro();
        if micro == 0 || !b.batch_size.is_multiple_of(micro) {
            return bad(
                "batch.micro_batch_size",
                format!("a divisor of batch.batch_size = {}, got {micro}", b.batch_size),
            );
        }
        if b.seq_len == 0 || b.seq_len > self.model.context_length {
            return bad(
                "batch.seq_len",
                format!(
                    "between 1 and model.context_length = {}, got {}",
                    self.model.context_length, b.seq_len
                ),
            );
        }

        self.optim.validate()?;
        self.run.validate(STOP_METRICS)?;
        let has_eval = self.data.eval.is_some() || self.data.holdout > 0;
        if has_eval && self.run.eval_batches == 0 {
            return bad("run.eval_batches", "at least 1 when held-out data is given".into());
        }
        if let Some(t) = &self.data.task {
            if t.examples == 0 {
                return bad("data.task.examples", "at least 1".into());
            }
            if t.max_new_tokens == 0 {
                return bad("data.task.max_new_tokens", "at least 1".into());
            }
        }
        Ok(())
    }

    /// A small SFT config, the starting point of tests and examples.
    pub fn sft(train: impl Into<PathBuf>, model: GptConfig, seq_len: usize) -> Self {
        TrainConfig {
            model,
            data: DataConfig { kind: DataKind::Sft, train: train.into(), eval: None, holdout: 0, task: None },
            tokenizer: TokenizerConfig::Char,
            optim: OptimConfig::default(),
            batch: BatchConfig { batch_size: 8, micro_batch_size: None, seq_len },
            run: RunConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> TrainConfig {
        TrainConfig::sft("train.jsonl", GptConfig::new(0, 32, 1, 2, 8), 16)
    }

    #[test]
    fn defaults_validate() {
        base().validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        type Edit = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("batch.micro_batch_size", Box::new(|c| c.batch.micro_batch_size = Some(3))),
            ("batch.seq_len", Box::new(|c| c.batch.seq_len = 33)),
            ("batch.batch_size", Box::new(|c| c.batch.batch_size = 0)),
            ("optim.min_lr", Box::new(|c| c.optim.min_lr = 1.0)),
            ("optim.betas", Box::new(|c| c.optim.betas = (0.9, 1.0))),
            ("run.steps", Box::new(|c| c.run.steps = 0)),
            ("model.n_head", Box::new(|c| c.model.n_head = 3)),
            (
                "run.stop.metric",
                Box::new(|c| c.run.stop = Some(StopCondition { metric: "acc".into(), target: 1.0 })),
            ),
        ];
        for (field, edit) in cases {
            let mut c = base();
            edit(&mut c);
            match c.validate() {
                Err(TrainError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = serde_json::to_value(base()).unwrap();
        v["run"]["stepz"] = 3.into();
        let err = serde_json::from_value::<TrainConfig>(v).unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
    }

    #[test]
    fn json_round_trip() {
        let c = base();
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
