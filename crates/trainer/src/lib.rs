//! pglm-trainer: next-token pretraining and supervised fine-tuning, with the infrastructure the
//! policy-gradient trainer reuses: the config ([`config`]), the seeded resumable data order
//! ([`data`]), gradient accumulation ([`accum`]), evaluation ([`eval`]), `metrics.jsonl`
//! ([`metrics`]), the non-finite guard ([`guard`]), the run directory ([`run_dir`]) and
//! full-state checkpoints ([`checkpoint`]).
//!
//! ```no_run
//! use pglm_model::GptConfig;
//! use pglm_trainer::{TrainConfig, Trainer};
//!
//! # fn main() -> Result<(), pglm_trainer::TrainError> {
//! // vocab_size 0: the character tokenizer built from the data decides it.
//! let mut config = TrainConfig::sft("data/addition/sft.jsonl", GptConfig::new(0, 32, 2, 4, 64), 24);
//! config.run.steps = 500;
//! let mut trainer = Trainer::<f32>::new(config, "runs/addition")?;
//! let summary = trainer.run()?;
//! println!("{:?}", summary.last);
//! // Later, or after a crash: continue exactly where the last checkpoint left off.
//! let mut trainer = Trainer::<f32>::resume("runs/addition")?;
//! trainer.run()?;
//! # Ok(()) }
//! ```
//!
//! The metrics' field names are documented in `docs/METRICS.md`.

pub mod accum;
pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod eval;
pub mod guard;
pub mod metrics;
pub mod pretrain;
pub mod rl;
pub mod run_dir;
pub mod sft;
mod trainer;

pub use config::{
    BatchConfig, DataConfig, DataKind, DecayShape, OptimConfig, RunConfig, StopCondition, TaskEvalConfig,
    TokenizerConfig, TrainConfig,
};
pub use error::TrainError;
pub use metrics::StepMetrics;
pub use trainer::{EvalMetrics, RunSummary, Trainer, build_tokenizer};
