//! Verifiable tasks: seeded generators of (prompt, reference, correct completion) and their reward.
//!
//! Prompts are short and plain ASCII so that a tiny char- or byte-level model can learn them
//! (addition: prompt `12+345=`, completion `357`). Completions never contain special tokens:
//! the trainer appends its tokenizer's end marker.

mod arithmetic;
mod countdown;
mod sentiment;
mod strings;

pub use arithmetic::{ArithOp, Arithmetic, ArithmeticConfig};
pub use countdown::{CountdownConfig, CountdownTask, PromptStyle};
pub use sentiment::{Sentiment, SentimentConfig};
pub use strings::{StringConfig, StringOp, StringTask};

use crate::Reward;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One generated example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// What the policy is given.
    pub prompt: String,
    /// What the reward checks against: a JSON object (for example `{"answer": "357"}`).
    pub reference: Value,
    /// A correct completion, for supervised pretraining.
    pub completion: String,
}

/// A task: generates examples from a seed and names the reward that scores them.
pub trait Task: Send + Sync {
    /// The task's name (as given to `cargo xtask data`).
    fn name(&self) -> &str;

    /// Draws one example. Everything random must come from `rng`, so an example is a pure
    /// function of the generator's state.
    fn sample(&self, rng: &mut Rng) -> Example;

    /// The reward that scores this task's completions; a correct completion scores its maximum.
    fn reward(&self) -> Box<dyn Reward>;

    /// The settings, such that `builtin_task(self.name(), &self.config())` rebuilds this task.
    fn config(&self) -> Value {
        Value::Object(Default::default())
    }

    /// A well-formed completion that is *not* chosen to be correct, for format-only pretraining;
    /// `None` when the task has no such notion (the default) or none could be drawn.
    fn format_completion(&self, _example: &Example, _rng: &mut Rng) -> Option<String> {
        None
    }
}

/// Why a task could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No built-in task has this name.
    #[error("unknown task {0:?} (built-in tasks: {names})", names = BUILTIN_TASKS.join(", "))]
    Unknown(String),
    /// The settings are malformed or out of range.
    #[error("task {task}: {reason}")]
    Config { task: String, reason: String },
}

/// The names [`builtin_task`] accepts.
pub const BUILTIN_TASKS: &[&str] =
    &["addition", "subtraction", "multiplication", "countdown", "reverse", "sort", "sentiment"];

fn parse_config<T: serde::de::DeserializeOwned>(task: &str, config: &Value) -> Result<T, TaskError> {
    let config = if config.is_null() { Value::Object(Default::default()) } else { config.clone() };
    serde_json::from_value(config).map_err(|e| TaskError::Config { task: task.into(), reason: e.to_string() })
}

/// Builds a built-in task from its name and settings (a JSON object; missing keys take defaults,
/// unknown keys are an error). See each task's config type for the keys.
pub fn builtin_task(name: &str, config: &Value) -> Result<Box<dyn Task>, TaskError> {
    Ok(match name {
        "addition" => Box::new(Arithmetic::new(ArithOp::Add, parse_config(name, config)?)?),
        "subtraction" => Box::new(Arithmetic::new(ArithOp::Sub, parse_config(name, config)?)?),
        "multiplication" => Box::new(Arithmetic::new(ArithOp::Mul, parse_config(name, config)?)?),
        "countdown" => Box::new(CountdownTask::new(parse_config(name, config)?)?),
        "reverse" => Box::new(StringTask::new(StringOp::Reverse, parse_config(name, config)?)?),
        "sort" => Box::new(StringTask::new(StringOp::Sort, parse_config(name, config)?)?),
        "sentiment" => Box::new(Sentiment::new(parse_config(name, config)?)),
        other => return Err(TaskError::Unknown(other.into())),
    })
}

#[cfg(test)]
mod tests;
