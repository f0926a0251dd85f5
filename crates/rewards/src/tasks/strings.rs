//! String reversal and sorting: `reverse abc=` → `cba`, `sort cab=` → `abc`.

use super::{Example, Task, TaskError};
use crate::rng::Rng;
use crate::{EditDistance, Reward};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The transformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringOp {
    /// Reverse the characters.
    Reverse,
    /// Sort the characters (by code point).
    Sort,
}

/// Settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StringConfig {
    /// Shortest input (at least 1).
    pub min_len: usize,
    /// Longest input (at most 256).
    pub max_len: usize,
    /// The characters inputs are drawn from (no whitespace and no `=`, which would blur the prompt).
    pub alphabet: String,
}

impl Default for StringConfig {
    fn default() -> Self {
        Self { min_len: 3, max_len: 8, alphabet: "abcdefghijklmnopqrstuvwxyz".into() }
    }
}

/// Reverse or sort a random string. Reward: [`EditDistance`] on `answer` (partial credit).
#[derive(Clone, Debug)]
pub struct StringTask {
    op: StringOp,
    config: StringConfig,
    alphabet: Vec<char>,
}

impl StringTask {
    /// Validates the settings.
    pub fn new(op: StringOp, config: StringConfig) -> Result<Self, TaskError> {
        let name = if op == StringOp::Reverse { "reverse" } else { "sort" };
        let bad = |reason: String| Err(TaskError::Config { task: name.into(), reason });
        if !(1 <= config.min_len && config.min_len <= config.max_len && config.max_len <= 256) {
            return bad(format!(
                "need 1 ≤ min_len ≤ max_len ≤ 256, got {} and {}",
                config.min_len, config.max_len
            ));
        }
        let alphabet: Vec<char> = config.alphabet.chars().collect();
        if alphabet.is_empty() || alphabet.iter().any(|c| c.is_whitespace() || *c == '=') {
            return bad(format!(
                "the alphabet {:?} must be non-empty, without whitespace or '='",
                config.alphabet
            ));
        }
        Ok(Self { op, config, alphabet })
    }
}

impl Task for StringTask {
    fn name(&self) -> &str {
        match self.op {
            StringOp::Reverse => "reverse",
            StringOp::Sort => "sort",
        }
    }

    fn sample(&self, rng: &mut Rng) -> Example {
        let len = rng.range(self.config.min_len as u64, self.config.max_len as u64) as usize;
        let input: Vec<char> = (0..len).map(|_| *rng.choose(&self.alphabet)).collect();
        let mut output = input.clone();
        match self.op {
            StringOp::Reverse => output.reverse(),
            StringOp::Sort => output.sort_unstable(),
        }
        let input: String = input.into_iter().collect();
        let answer: String = output.into_iter().collect();
        Example {
            prompt: format!("{} {input}=", self.name()),
            reference: json!({ "answer": answer }),
            completion: answer,
        }
    }

    fn reward(&self) -> Box<dyn Reward> {
        Box::new(EditDistance::new())
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
