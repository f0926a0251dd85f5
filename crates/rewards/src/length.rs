//! Length shaping: DAPO's overlong penalty and a plain length penalty.
//!
//! Both read [`RewardInput::completion_len`], the length in the trainer's tokens.

use crate::{Reward, RewardError, RewardInput, Score};

/// DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), with `L_max = max_len` and
/// `L_cache = buffer`, scaled by `factor` (1.0 in DAPO; OpenRLHF's `overlong_penalty_factor`):
///
/// ```text
/// R_len(y) = 0                                  if |y| ≤ L_max − L_cache
///          = ((L_max − L_cache) − |y|) / L_cache  if L_max − L_cache < |y| ≤ L_max
///          = −1                                 if |y| > L_max
/// ```
#[derive(Clone, Debug)]
pub struct OverlongPenalty {
    max_len: usize,
    buffer: usize,
    factor: f64,
}

impl OverlongPenalty {
    /// `max_len` is the generation limit and `buffer` the soft zone before it (DAPO: 20480 and 4096).
    pub fn new(max_len: usize, buffer: usize) -> Result<Self, RewardError> {
        if buffer == 0 || buffer > max_len {
            return Err(RewardError::Config {
                reward: "overlong".into(),
                reason: format!("need 0 < buffer ≤ max_len, got buffer {buffer} and max_len {max_len}"),
            });
        }
        Ok(Self { max_len, buffer, factor: 1.0 })
    }

    /// Scales the penalty (its minimum becomes `−factor`).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// `R_len` for a completion of `len` tokens.
    pub fn penalty(&self, len: usize) -> f64 {
        let expected = self.max_len - self.buffer;
        if len <= expected {
            0.0
        } else if len <= self.max_len {
            (expected as f64 - len as f64) / self.buffer as f64 * self.factor
        } else {
            -self.factor
        }
    }
}

impl Reward for OverlongPenalty {
    fn name(&self) -> &str {
        "overlong"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        Ok(Score::Value(self.penalty(input.completion_len)))
    }
}

/// A plain length penalty: `−coef · max(0, |y| − free)`.
#[derive(Clone, Debug)]
pub struct LengthPenalty {
    coef: f64,
    free: usize,
}

impl LengthPenalty {
    /// `−coef` per token beyond the first `free` tokens.
    pub fn new(coef: f64, free: usize) -> Self {
        Self { coef, free }
    }
}

impl Reward for LengthPenalty {
    fn name(&self) -> &str {
        "length_penalty"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        Ok(Score::Value(-self.coef * input.completion_len.saturating_sub(self.free) as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_matches_dapo() {
        let p = OverlongPenalty::new(20, 4).unwrap();
        let table = [(0, 0.0), (16, 0.0), (17, -0.25), (18, -0.5), (20, -1.0), (21, -1.0), (10_000, -1.0)];
        for (len, want) in table {
            assert_eq!(p.penalty(len), want, "len {len}");
        }
        assert_eq!(OverlongPenalty::new(20, 4).unwrap().factor(0.5).penalty(18), -0.25);
        assert!(OverlongPenalty::new(4, 8).is_err());
        assert!(OverlongPenalty::new(4, 0).is_err());
        let reference = serde_json::json!({});
        let input = RewardInput::new("p", "abc", &reference).with_len(19);
        assert_eq!(p.score(&input).unwrap(), Score::Value(-0.75));
    }

    #[test]
    fn plain_penalty() {
        let p = LengthPenalty::new(0.01, 10);
        let reference = serde_json::json!({});
        let s = |len| p.score(&RewardInput::new("p", "", &reference).with_len(len)).unwrap();
        assert_eq!(s(5), Score::Value(-0.0));
        assert_eq!(s(30), Score::Value(-0.2));
    }
}
