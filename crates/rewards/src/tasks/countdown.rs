//! Countdown: combine the given numbers with `+ - * /`, each exactly once, to reach the target.

use super::{Example, Task, TaskError};
use crate::Reward;
use crate::countdown::{BinOp, Countdown, Expr, Rational};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the prompt is worded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// `Make 30 from 3 5 7 2:` → `<answer>(7+3)*(5-2)</answer>`: short enough for a tiny model.
    #[default]
    Compact,
    /// TinyZero's base-model template (ends with `<think>`) → `</think>\n<answer>…</answer>`.
    Tinyzero,
}

/// Settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountdownConfig {
    /// Fewest numbers per puzzle (at least 2).
    pub min_count: u32,
    /// Most numbers per puzzle (at most 6).
    pub max_count: u32,
    /// The numbers are drawn uniformly from `1..=max_number`.
    pub max_number: u32,
    /// Targets lie in `1..=max_target`.
    pub max_target: u32,
    /// The prompt wording.
    pub prompt: PromptStyle,
}

impl Default for CountdownConfig {
    fn default() -> Self {
        Self { min_count: 3, max_count: 4, max_number: 50, max_target: 100, prompt: PromptStyle::Compact }
    }
}

/// Countdown puzzles whose target is reachable by construction: the numbers are combined in a
/// random order with random operations whose intermediate values are non-negative integers, and
/// the result (when it lies in `1..=max_target`) becomes the target. Reward: [`Countdown`].
#[derive(Clone, Debug)]
pub struct CountdownTask {
    config: CountdownConfig,
}

/// Gives up on one draw of numbers after this many random combinations miss the target range.
const TRIES_PER_DRAW: usize = 32;

impl CountdownTask {
    /// Validates the settings.
    pub fn new(config: CountdownConfig) -> Result<Self, TaskError> {
        let c = &config;
        let bad = |reason: String| Err(TaskError::Config { task: "countdown".into(), reason });
        if !(2 <= c.min_count && c.min_count <= c.max_count && c.max_count <= 6) {
            return bad(format!(
                "need 2 ≤ min_count ≤ max_count ≤ 6, got {} and {}",
                c.min_count, c.max_count
            ));
        }
        if c.max_number == 0 || c.max_target == 0 {
            return bad("max_number and max_target must be at least 1".into());
        }
        Ok(Self { config })
    }

    /// A random solution over `numbers` with non-negative integer intermediates, or `None`.
    fn combine(rng: &mut Rng, numbers: &[i128]) -> Option<(Expr, i128)> {
        let mut pool: Vec<(Expr, i128)> = numbers.iter().map(|&n| (Expr::Num(n), n)).collect();
        rng.shuffle(&mut pool);
        while pool.len() > 1 {
            let i = rng.below(pool.len() as u64) as usize;
            let (x, vx) = pool.swap_remove(i);
            let j = rng.below(pool.len() as u64) as usize;
            let (y, vy) = pool.swap_remove(j);
            let (op, l, r, v) = match *rng.choose(&[BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div]) {
                BinOp::Add => (BinOp::Add, x, y, vx + vy),
                BinOp::Mul => (BinOp::Mul, x, y, vx.checked_mul(vy)?),
                BinOp::Sub if vx >= vy => (BinOp::Sub, x, y, vx - vy),
                BinOp::Sub => (BinOp::Sub, y, x, vy - vx),
                BinOp::Div if vy != 0 && vx % vy == 0 => (BinOp::Div, x, y, vx / vy),
                BinOp::Div if vx != 0 && vy % vx == 0 => (BinOp::Div, y, x, vy / vx),
                BinOp::Div => return None,
            };
            pool.push((Expr::Bin(op, Box::new(l), Box::new(r)), v));
        }
        pool.pop()
    }

    /// Any well-formed equation over `numbers` (each once), with exact value.
    fn any_equation(rng: &mut Rng, numbers: &[i128]) -> Option<(Expr, Rational)> {
        let mut pool: Vec<Expr> = numbers.iter().map(|&n| Expr::Num(n)).collect();
        rng.shuffle(&mut pool);
        while pool.len() > 1 {
            let x = pool.swap_remove(rng.below(pool.len() as u64) as usize);
            let y = pool.swap_remove(rng.below(pool.len() as u64) as usize);
            let op = *rng.choose(&[BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div]);
            pool.push(Expr::Bin(op, Box::new(x), Box::new(y)));
        }
        let e = pool.pop()?;
        let v = e.eval().ok()?;
        Some((e, v))
    }

    fn prompt(&self, numbers: &[i128], target: i128) -> String {
        match self.config.prompt {
            PromptStyle::Compact => {
                let list: Vec<String> = numbers.iter().map(i128::to_string).collect();
                format!("Make {target} from {}:", list.join(" "))
            }
            PromptStyle::Tinyzero => {
                // Python's str() of a list, as TinyZero's f-string prints `nums`.
                let list: Vec<String> = numbers.iter().map(i128::to_string).collect();
                let numbers = format!("[{}]", list.join(", "));
                format!(
                    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\nUser: Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>"
                )
            }
        }
    }

    fn wrap(&self, equation: &Expr) -> String {
        match self.config.prompt {
            PromptStyle::Compact => format!("<answer>{equation}</answer>"),
            PromptStyle::Tinyzero => format!("</think>\n<answer>{equation}</answer>"),
        }
    }

    fn numbers_of(example: &Example) -> Option<(Vec<i128>, i128)> {
        let nums = example.reference.get("numbers")?.as_array()?;
        let nums = nums.iter().map(|n| n.as_i64().map(i128::from)).collect::<Option<Vec<_>>>()?;
        Some((nums, example.reference.get("target")?.as_i64()? as i128))
    }
}

impl Task for CountdownTask {
    fn name(&self) -> &str {
        "countdown"
    }

    fn sample(&self, rng: &mut Rng) -> Example {
        let c = &self.config;
        let (numbers, solution, target) = 'draw: loop {
            let count = rng.range(c.min_count as u64, c.max_count as u64) as usize;
            let numbers: Vec<i128> = (0..count).map(|_| rng.range(1, c.max_number as u64) as i128).collect();
            for _ in 0..TRIES_PER_DRAW {
                if let Some((e, v)) = Self::combine(rng, &numbers)
                    && (1..=c.max_target as i128).contains(&v)
                {
                    break 'draw (numbers, e, v);
                }
            }
        };
        Example {
            prompt: self.prompt(&numbers, target),
            reference: json!({ "numbers": numbers, "target": target }),
            completion: self.wrap(&solution),
        }
    }

    fn reward(&self) -> Box<dyn Reward> {
        Box::new(Countdown::new())
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    /// An equation that uses each number once and evaluates without error, but misses the target:
    /// it scores exactly the format score, leaving the search for the target to RL.
    fn format_completion(&self, example: &Example, rng: &mut Rng) -> Option<String> {
        let (numbers, target) = Self::numbers_of(example)?;
        (0..100).find_map(|_| {
            let (e, v) = Self::any_equation(rng, &numbers)?;
            (v != Rational::int(target)).then(|| self.wrap(&e))
        })
    }
}
