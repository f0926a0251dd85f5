//! Format rewards from a regular expression (for example think/answer tags).

use crate::{Reward, RewardError, RewardInput, Score};

/// `hit` (1.0) when the completion matches the regular expression, else `miss` (0.0).
///
/// The pattern is found anywhere unless anchored: write `^…$` (or `\A…\z`) to require the whole
/// completion. The `regex` crate has no look-around, so [`FormatReward::once`] adds what a pattern
/// cannot say: that some tags occur exactly once.
#[derive(Clone, Debug)]
pub struct FormatReward {
    name: String,
    pattern: regex::Regex,
    once: Vec<String>,
    hit: f64,
    miss: f64,
}

impl FormatReward {
    /// A format reward named `format` for `pattern` (syntax of the `regex` crate).
    pub fn new(pattern: &str) -> Result<Self, RewardError> {
        let pattern = regex::Regex::new(pattern)
            .map_err(|e| RewardError::Config { reward: "format".into(), reason: e.to_string() })?;
        Ok(Self { name: "format".into(), pattern, once: Vec::new(), hit: 1.0, miss: 0.0 })
    }

    /// The R1 layout: the whole completion is `<think>…</think>` then `<answer>…</answer>`
    /// (whitespace around them allowed), each tag exactly once.
    pub fn think_answer() -> Self {
        Self::new(r"(?s)\A\s*<think>.*</think>\s*<answer>.*</answer>\s*\z").expect("static regex").once(&[
            "<think>",
            "</think>",
            "<answer>",
            "</answer>",
        ])
    }

    /// Requires each of `tags` to occur exactly once as well.
    pub fn once<S: AsRef<str>>(mut self, tags: &[S]) -> Self {
        self.once = tags.iter().map(|t| t.as_ref().to_string()).collect();
        self
    }

    /// Renames the reward (its metric key).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The scores for a match and a miss.
    pub fn scores(mut self, hit: f64, miss: f64) -> Self {
        self.hit = hit;
        self.miss = miss;
        self
    }

    /// Whether `text` has the format.
    pub fn matches(&self, text: &str) -> bool {
        self.pattern.is_match(text) && self.once.iter().all(|t| text.matches(t.as_str()).count() == 1)
    }
}

impl Reward for FormatReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        Ok(Score::Value(if self.matches(input.completion) { self.hit } else { self.miss }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_answer_table() {
        let r = FormatReward::think_answer();
        for (text, want) in [
            ("<think>a</think><answer>1</answer>", true),
            (" <think>\nx < y\n</think>\n<answer>\n1\n</answer>\n", true),
            ("<answer>1</answer>", false),
            ("<think>a</think>", false),
            ("<think>a</think><answer>1</answer><answer>2</answer>", false),
            ("<think><think>a</think><answer>1</answer>", false),
            ("hi <think>a</think><answer>1</answer>", false),
            ("<answer>1</answer><think>a</think>", false),
            ("", false),
        ] {
            assert_eq!(r.matches(text), want, "{text:?}");
        }
    }

    #[test]
    fn custom_pattern_and_scores() {
        let r = FormatReward::new(r"^\d+$").unwrap().scores(0.5, -1.0).named("digits");
        let reference = serde_json::json!({});
        let s = |c: &str| r.score(&RewardInput::new("p", c, &reference)).unwrap();
        assert_eq!(s("123"), Score::Value(0.5));
        assert_eq!(s("12a"), Score::Value(-1.0));
        assert_eq!(r.name(), "digits");
        assert!(matches!(FormatReward::new("(unclosed"), Err(RewardError::Config { .. })));
    }
}
