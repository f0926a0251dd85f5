//! Shaped partial credit for string tasks from a normalised edit distance.

use crate::reference::get_text;
use crate::{Reward, RewardError, RewardInput, Score};
use serde_json::Value;

/// Partial credit `1 − d(c, a) / max(|c|, |a|)`, where `d` is the Levenshtein distance in chars
/// between the trimmed completion `c` and the trimmed reference answer `a` (1.0 when both are empty).
///
/// An exact answer scores 1.0 and every edit costs the same share. Completions longer than
/// `max_chars` (10,000 by default) score 0.0 without computing `d`, which keeps the cost bounded.
#[derive(Clone, Debug)]
pub struct EditDistance {
    field: String,
    max_chars: usize,
}

impl Default for EditDistance {
    fn default() -> Self {
        Self::new()
    }
}

impl EditDistance {
    /// Compares with the reference field `answer`.
    pub fn new() -> Self {
        Self { field: "answer".into(), max_chars: 10_000 }
    }

    /// Reads the reference from `field` instead of `answer`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Completions longer than this many chars score 0.0.
    pub fn max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars;
        self
    }
}

/// The Levenshtein distance between `a` and `b` (insertions, deletions and substitutions cost 1),
/// by the one-row dynamic programme: `D[i][j] = min(D[i−1][j] + 1, D[i][j−1] + 1, D[i−1][j−1] + [a_i ≠ b_j])`.
pub fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0]; // D[i−1][j−1]
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let up = row[j + 1]; // D[i−1][j]
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + usize::from(ca != cb));
            diag = up;
        }
    }
    row[b.len()]
}

impl Reward for EditDistance {
    fn name(&self) -> &str {
        "edit_distance"
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        get_text(self.name(), reference, &self.field).map(|_| ())
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        let answer = get_text(self.name(), input.reference, &self.field)?;
        let a: Vec<char> = answer.trim().chars().collect();
        let completion = input.completion.trim();
        if completion.chars().count() > self.max_chars {
            return Ok(Score::Value(0.0));
        }
        let c: Vec<char> = completion.chars().collect();
        let longest = a.len().max(c.len());
        if longest == 0 {
            return Ok(Score::Value(1.0));
        }
        Ok(Score::Value(1.0 - levenshtein(&c, &a) as f64 / longest as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn distances() {
        assert_eq!(levenshtein(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(levenshtein(&chars(""), &chars("abc")), 3);
        assert_eq!(levenshtein(&chars("abc"), &chars("abc")), 0);
        assert_eq!(levenshtein(&chars("héllo"), &chars("hello")), 1);
    }

    #[test]
    fn partial_credit_table() {
        let r = EditDistance::new();
        let gold = json!({"answer": "abcd"});
        let s = |c: &str| r.score(&RewardInput::new("p", c, &gold)).unwrap().value().unwrap();
        assert_eq!(s("abcd"), 1.0);
        assert_eq!(s(" abcd\n"), 1.0);
        assert_eq!(s("abce"), 0.75);
        assert_eq!(s("dcba"), 0.0);
        assert_eq!(s("abcdabcd"), 0.5);
        assert_eq!(s(""), 0.0);
        assert_eq!(s(&"a".repeat(20_000)), 0.0);
        let empty = json!({"answer": ""});
        assert_eq!(r.score(&RewardInput::new("p", "", &empty)).unwrap(), Score::Value(1.0));
    }
}
