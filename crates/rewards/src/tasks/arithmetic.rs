//! Integer arithmetic: `12+345=` → `357`.

use super::{Example, Task, TaskError};
use crate::rng::Rng;
use crate::{ExactMatch, Reward};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    /// `a+b`
    Add,
    /// `a-b` (the result may be negative)
    Sub,
    /// `a*b`
    Mul,
}

/// Settings: the largest number of digits of each operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArithmeticConfig {
    /// Most digits of the first operand (1 to 18).
    pub digits: u32,
    /// Most digits of the second operand; `None` means the same as `digits`.
    pub digits_b: Option<u32>,
}

impl Default for ArithmeticConfig {
    fn default() -> Self {
        Self { digits: 3, digits_b: None }
    }
}

/// Integer arithmetic. Each operand first draws its digit count uniformly in `1..=digits`, then a
/// uniform number with that many digits (0–9 for one digit), so short operands are as common as
/// long ones. Reward: [`ExactMatch`] on `answer`.
#[derive(Clone, Debug)]
pub struct Arithmetic {
    op: ArithOp,
    config: ArithmeticConfig,
}

impl Arithmetic {
    /// Validates the digit counts (1 to 18, so every result is exact in `i128`).
    pub fn new(op: ArithOp, config: ArithmeticConfig) -> Result<Self, TaskError> {
        let b = config.digits_b.unwrap_or(config.digits);
        for d in [config.digits, b] {
            if !(1..=18).contains(&d) {
                return Err(TaskError::Config {
                    task: Self::name_of(op).into(),
                    reason: format!("digit counts must be 1 to 18, got {d}"),
                });
            }
        }
        Ok(Self { op, config })
    }

    fn name_of(op: ArithOp) -> &'static str {
        match op {
            ArithOp::Add => "addition",
            ArithOp::Sub => "subtraction",
            ArithOp::Mul => "multiplication",
        }
    }

    fn operand(rng: &mut Rng, max_digits: u32) -> u64 {
        let d = rng.range(1, max_digits as u64) as u32;
        let lo = if d == 1 { 0 } else { 10u64.pow(d - 1) };
        rng.range(lo, 10u64.pow(d) - 1)
    }
}

impl Task for Arithmetic {
    fn name(&self) -> &str {
        Self::name_of(self.op)
    }

    fn sample(&self, rng: &mut Rng) -> Example {
        let a = Self::operand(rng, self.config.digits);
        let b = Self::operand(rng, self.config.digits_b.unwrap_or(self.config.digits));
        let (a128, b128) = (a as i128, b as i128);
        let (symbol, result) = match self.op {
            ArithOp::Add => ('+', a128 + b128),
            ArithOp::Sub => ('-', a128 - b128),
            ArithOp::Mul => ('*', a128 * b128),
        };
        let answer = result.to_string();
        Example {
            prompt: format!("{a}{symbol}{b}="),
            reference: json!({ "answer": answer }),
            completion: answer,
        }
    }

    fn reward(&self) -> Box<dyn Reward> {
        Box::new(ExactMatch::new())
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
