//! The countdown reward with TinyZero's semantics, judged by our own exact parser.
//!
//! TinyZero (`verl/utils/reward_score/countdown.py`) scores 0 when there is no answer, 0.1 when an
//! answer is there but wrong in any way, and 1.0 when it hits the target. We follow its extraction
//! step for step; where exact rationals and Python's float `eval` differ, docs/REWARDS.md says how.

mod expr;
mod rational;

pub use expr::{BinOp, Expr, ExprError, MAX_DEPTH, MAX_LEN, parse};
pub use rational::{ArithError, Rational};

use crate::reference::{get_int, get_int_list};
use crate::{Reward, RewardError, RewardInput, Score};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

// As TinyZero's `r'<answer>(.*?)</answer>'` without DOTALL: `.` stops at '\n' in both engines.
static ANSWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<answer>(.*?)</answer>").expect("static regex"));

/// TinyZero's `extract_solution` on a completion: keep the last line, take the last
/// `<answer>…</answer>` on it, and strip it as Python's `str.strip()` does.
pub fn extract_answer(completion: &str) -> Option<&str> {
    let last_line = completion.rsplit('\n').next().unwrap_or("");
    let content = ANSWER.captures_iter(last_line).last()?.get(1)?.as_str();
    // Python's str.isspace also counts the separators U+001C..U+001F, which Rust's does not.
    Some(content.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)))
}

/// What the judge found, from worst to best.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `<answer>…</answer>` on the last line: score 0.
    NoAnswer,
    /// The answer does not parse (or is too long or deep): format score.
    Malformed(ExprError),
    /// The numbers used are not exactly the given ones (each once): format score.
    WrongNumbers {
        /// The integers the equation used, in reading order.
        used: Vec<i128>,
    },
    /// Division by zero or overflow while evaluating: format score.
    Unevaluable(ArithError),
    /// A valid equation with another value: format score.
    Miss(Rational),
    /// A valid equation equal to the target: full score.
    Hit,
}

impl Verdict {
    /// TinyZero's scale: 0 for [`Verdict::NoAnswer`], `score` for [`Verdict::Hit`], else `format_score`.
    pub fn score(&self, score: f64, format_score: f64) -> f64 {
        match self {
            Verdict::NoAnswer => 0.0,
            Verdict::Hit => score,
            _ => format_score,
        }
    }
}

/// Judges a completion: the equation in its answer tag must use each of `numbers` exactly once
/// (as a multiset, as TinyZero's sorted-list comparison) and equal `target` exactly.
pub fn judge(completion: &str, numbers: &[i128], target: i128) -> Verdict {
    let Some(answer) = extract_answer(completion) else {
        return Verdict::NoAnswer;
    };
    judge_equation(answer, numbers, target)
}

/// Judges a bare equation (already extracted).
pub fn judge_equation(equation: &str, numbers: &[i128], target: i128) -> Verdict {
    let expr = match parse(equation) {
        Ok(e) => e,
        Err(e) => return Verdict::Malformed(e),
    };
    let mut used = expr.literals();
    let mut want = numbers.to_vec();
    used.sort_unstable();
    want.sort_unstable();
    if used != want {
        return Verdict::WrongNumbers { used: expr.literals() };
    }
    match expr.eval() {
        Err(e) => Verdict::Unevaluable(e),
        Ok(v) if v == Rational::int(target) => Verdict::Hit,
        Ok(v) => Verdict::Miss(v),
    }
}

/// The countdown reward. Reference fields: `numbers` (array of integers) and `target` (integer),
/// as TinyZero's `ground_truth`.
#[derive(Clone, Debug)]
pub struct Countdown {
    score: f64,
    format_score: f64,
}

impl Default for Countdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Countdown {
    /// TinyZero's scores: 1.0 for a hit, 0.1 for a present but wrong answer.
    pub fn new() -> Self {
        Self { score: 1.0, format_score: 0.1 }
    }

    /// Other scores for a hit and for a present but wrong answer.
    pub fn scores(mut self, score: f64, format_score: f64) -> Self {
        self.score = score;
        self.format_score = format_score;
        self
    }

    fn ground_truth(&self, reference: &Value) -> Result<(Vec<i128>, i128), RewardError> {
        Ok((get_int_list(self.name(), reference, "numbers")?, get_int(self.name(), reference, "target")?))
    }
}

impl Reward for Countdown {
    fn name(&self) -> &str {
        "countdown"
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        self.ground_truth(reference).map(|_| ())
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        let (numbers, target) = self.ground_truth(input.reference)?;
        Ok(Score::Value(judge(input.completion, &numbers, target).score(self.score, self.format_score)))
    }
}

#[cfg(test)]
mod tests;
