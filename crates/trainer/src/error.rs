//! The trainer's errors. Each names the file, line or field at fault and what was expected.

use std::path::PathBuf;

use pglm_autograd::optim::OptimError;
use pglm_model::ModelError;
use pglm_model::checkpoint::CheckpointError;
use pglm_model::tokenizer::TokenizerError;
use pglm_rewards::dataset::DatasetError;

/// What went wrong while setting up, running or resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config field is out of range or inconsistent with another.
    #[error("train config: field `{field}` must be {expected}")]
    Config {
        /// The field's dotted path, such as `batch.micro_batch_size`.
        field: String,
        /// What was expected (and what was found).
        expected: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the run (config, metrics) is malformed.
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (with line and column).
        message: String,
    },
    /// A dataset file is empty, malformed or lacks a field (the rewards crate's reader).
    #[error(transparent)]
    Dataset(Box<DatasetError>),
    /// A text corpus holds no text.
    #[error("{}: the corpus is empty (expected some text to train on)", path.display())]
    EmptyCorpus {
        /// The corpus file.
        path: PathBuf,
    },
    /// The data yields fewer training sequences than one batch needs.
    #[error(
        "{}: {what} gives {available} training sequences, fewer than batch.batch_size = {batch_size} \
         (use a smaller batch or more data)",
        path.display()
    )]
    BatchLargerThanData {
        /// The data file.
        path: PathBuf,
        /// What was counted (`"the corpus"`, `"the SFT file"`).
        what: &'static str,
        /// Sequences available.
        available: usize,
        /// Sequences one step needs.
        batch_size: usize,
    },
    /// The tokenizer cannot encode some text of a data file.
    #[error("{}:{line}: field `{field}`: the tokenizer cannot encode it: {source}", path.display())]
    Encode {
        /// The data file.
        path: PathBuf,
        /// 1-based line number (of the corpus or the JSONL file).
        line: usize,
        /// The field (`"text"` for a corpus).
        field: &'static str,
        /// The tokenizer's complaint (which character, where).
        #[source]
        source: Box<TokenizerError>,
    },
    /// The tokenizer lacks a special token the trainer needs.
    #[error("the tokenizer has no {which} token, which {why}")]
    MissingSpecial {
        /// `"BOS"`, `"EOS"` or `"PAD"`.
        which: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// The tokenizer could not be loaded or saved.
    #[error(transparent)]
    Tokenizer(Box<TokenizerError>),
    /// A tokenized example is longer than the training context.
    #[error(
        "{}:{line}: the example has {length} tokens (prompt, completion and markers), more than \
         batch.seq_len + 1 = {limit}; raise batch.seq_len (at most model.context_length) or shorten it",
        path.display()
    )]
    ExampleTooLong {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Its length in tokens.
        length: usize,
        /// The longest allowed.
        limit: usize,
    },
    /// The model rejected its config or a batch.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A checkpoint file could not be written, read or verified.
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    /// A checkpoint was written for another model or run config.
    #[error("{}: checkpoint is for a different config: `{field}` is {found} in the checkpoint, {expected} in the run", path.display())]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The differing field.
        field: String,
        /// The run's value.
        expected: String,
        /// The checkpoint's value.
        found: String,
    },
    /// The optimizer state in a checkpoint does not fit the model.
    #[error("{}: {source}", path.display())]
    OptimizerState {
        /// The checkpoint file.
        path: PathBuf,
        /// The mismatch.
        #[source]
        source: OptimError,
    },
    /// The run directory has no checkpoint to resume from.
    #[error("{}: no checkpoint to resume from (no `latest` file)", path.display())]
    NoCheckpoint {
        /// The run directory.
        path: PathBuf,
    },
    /// A new run was asked for in a directory that already holds one.
    #[error("{}: already holds a run (config.json exists); resume it or choose another directory", path.display())]
    RunExists {
        /// The run directory.
        path: PathBuf,
    },
    /// The evaluation task could not be built or its data read.
    #[error("task: {0}")]
    Task(#[from] pglm_rewards::TaskError),
    /// The task's reward failed on a completion (not a low score: an error of the reward itself).
    #[error("reward: {0}")]
    Reward(#[from] pglm_rewards::RewardError),
    /// Generation failed (bad sampling settings, or a prompt that does not fit the context).
    #[error("sampling: {0}")]
    Sampler(#[from] pglm_sampler::SamplerError),
    /// The starting policy could not be found or read.
    #[error("{}: {reason}", path.display())]
    PolicyInit {
        /// The `policy.init` path.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The loss or gradient norm was not finite for too many steps in a row.
    #[error(
        "training stopped at step {step}: {in_a_row} steps in a row had a non-finite {what} \
         (limit run.max_nonfinite_in_a_row = {limit}); last good checkpoint: {}",
        last_checkpoint.as_ref().map_or("none written yet".to_string(), |p| p.display().to_string())
    )]
    NonFinite {
        /// The step of the last failure (1-based).
        step: u64,
        /// Failures in a row.
        in_a_row: u32,
        /// The limit.
        limit: u32,
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The newest complete checkpoint, if any.
        last_checkpoint: Option<PathBuf>,
    },
}

impl TrainError {
    /// A [`TrainError::Config`] error.
    pub fn config(field: impl Into<String>, expected: impl Into<String>) -> Self {
        TrainError::Config { field: field.into(), expected: expected.into() }
    }

    /// A [`TrainError::CheckpointMismatch`]: `field` of the checkpoint at `path` was `found` where
    /// the run expects `expected`.
    pub fn mismatch(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        TrainError::CheckpointMismatch {
            path: path.into(),
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// A [`TrainError::Io`] error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}

// The large source errors are boxed so that `Result<_, TrainError>` stays small.
impl From<DatasetError> for TrainError {
    fn from(e: DatasetError) -> Self {
        TrainError::Dataset(Box::new(e))
    }
}

impl From<TokenizerError> for TrainError {
    fn from(e: TokenizerError) -> Self {
        TrainError::Tokenizer(Box::new(e))
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError::Checkpoint(Box::new(e))
    }
}
