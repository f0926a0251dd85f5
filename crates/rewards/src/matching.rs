//! Exact-match and label rewards.

use crate::normalize::normalize_answer;
use crate::reference::get_text;
use crate::{Reward, RewardError, RewardInput, Score};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

/// Which part of the completion is compared with the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extract {
    /// The whole completion.
    Whole,
    /// The content of the last `<answer>…</answer>` (may span lines); none scores as wrong.
    AnswerTag,
}

static ANSWER_TAG_ANY_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("static regex"));

/// The content of the last `<answer>…</answer>` anywhere in `text` (tags may span lines).
pub fn last_answer_tag(text: &str) -> Option<&str> {
    ANSWER_TAG_ANY_LINE.captures_iter(text).last().and_then(|c| c.get(1)).map(|m| m.as_str())
}

/// 1.0 when the normalised completion equals the normalised reference answer, else 0.0.
///
/// Normalisation ([`normalize_answer`]) ignores surrounding and repeated whitespace and case, and
/// compares plain decimal numbers by value form (`"042"` equals `"42"`, `"1,000"` equals `"1000"`).
#[derive(Clone, Debug)]
pub struct ExactMatch {
    field: String,
    extract: Extract,
}

impl Default for ExactMatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ExactMatch {
    /// Compares the whole completion with the reference field `answer`.
    pub fn new() -> Self {
        Self { field: "answer".into(), extract: Extract::Whole }
    }

    /// Reads the reference answer from `field` instead of `answer`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Chooses which part of the completion is compared.
    pub fn extract(mut self, extract: Extract) -> Self {
        self.extract = extract;
        self
    }
}

impl Reward for ExactMatch {
    fn name(&self) -> &str {
        "exact_match"
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        get_text(self.name(), reference, &self.field).map(|_| ())
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        let want = normalize_answer(&get_text(self.name(), input.reference, &self.field)?);
        let got = match self.extract {
            Extract::Whole => Some(input.completion),
            Extract::AnswerTag => last_answer_tag(input.completion),
        };
        let hit = got.is_some_and(|g| normalize_answer(g) == want);
        Ok(Score::Value(if hit { 1.0 } else { 0.0 }))
    }
}

/// Classification written as generation: the completion must be one of a fixed set of labels.
///
/// Scores (after [`normalize_answer`] on both sides): 1.0 for the reference label, 0.0 for another
/// label, and `invalid` (0.0 unless set) for text that is not a label at all.
#[derive(Clone, Debug)]
pub struct LabelMatch {
    labels: Vec<String>,
    field: String,
    invalid: f64,
}

impl LabelMatch {
    /// A label reward over `labels`, reading the reference label from the field `label`.
    pub fn new<S: AsRef<str>>(labels: &[S]) -> Self {
        Self {
            labels: labels.iter().map(|l| normalize_answer(l.as_ref())).collect(),
            field: "label".into(),
            invalid: 0.0,
        }
    }

    /// Reads the reference label from `field` instead of `label`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// The score of a completion that is none of the labels (for example −0.5 to punish it).
    pub fn invalid_score(mut self, score: f64) -> Self {
        self.invalid = score;
        self
    }

    fn reference_label(&self, reference: &Value) -> Result<String, RewardError> {
        let label = normalize_answer(&get_text(self.name(), reference, &self.field)?);
        if !self.labels.contains(&label) {
            return Err(RewardError::Reference {
                reward: self.name().into(),
                field: self.field.clone(),
                reason: format!("{label:?} is not one of the labels {:?}", self.labels),
            });
        }
        Ok(label)
    }
}

impl Reward for LabelMatch {
    fn name(&self) -> &str {
        "label"
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        self.reference_label(reference).map(|_| ())
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        let want = self.reference_label(input.reference)?;
        let got = normalize_answer(input.completion);
        let s = if got == want {
            1.0
        } else if self.labels.contains(&got) {
            0.0
        } else {
            self.invalid
        };
        Ok(Score::Value(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn score(r: &dyn Reward, completion: &str, reference: &Value) -> f64 {
        r.score(&RewardInput::new("p", completion, reference)).unwrap().value().unwrap()
    }

    #[test]
    fn exact_match_table() {
        let r = ExactMatch::new();
        let gold = json!({"answer": "42"});
        for (c, want) in [
            ("42", 1.0),
            (" 042\n", 1.0),
            ("42.0", 1.0),
            ("+42", 1.0),
            ("43", 0.0),
            ("42 ", 1.0),
            ("4 2", 0.0),
            ("٤٢", 0.0),
            ("", 0.0),
            ("__import__('os')", 0.0),
            ("42<answer>42</answer>", 0.0),
        ] {
            assert_eq!(score(&r, c, &gold), want, "{c:?}");
        }
        assert_eq!(score(&r, &"9".repeat(100_000), &gold), 0.0);
        let words = json!({"answer": "Hello  World"});
        assert_eq!(score(&r, "hello world", &words), 1.0);
        let numeric_gold = json!({"answer": 1000});
        assert_eq!(score(&r, "1,000", &numeric_gold), 1.0);
    }

    #[test]
    fn answer_tag_extraction_takes_the_last_tag() {
        let r = ExactMatch::new().extract(Extract::AnswerTag);
        let gold = json!({"answer": "7"});
        assert_eq!(score(&r, "<answer>3</answer> no, <answer> 7 </answer>", &gold), 1.0);
        assert_eq!(score(&r, "<answer>7</answer><answer>3</answer>", &gold), 0.0);
        assert_eq!(score(&r, "<answer>\n7\n</answer>", &gold), 1.0);
        assert_eq!(score(&r, "7", &gold), 0.0);
    }

    #[test]
    fn missing_reference_is_an_error() {
        let r = ExactMatch::new();
        let e = r.score(&RewardInput::new("p", "1", &json!({"answr": "1"}))).unwrap_err();
        assert!(e.to_string().contains("`answer`"), "{e}");
    }

    #[test]
    fn label_table() {
        let r = LabelMatch::new(&["positive", "negative"]).invalid_score(-0.5);
        let gold = json!({"label": "Positive"});
        for (c, want) in
            [("positive", 1.0), (" POSITIVE\n", 1.0), ("negative", 0.0), ("neutral", -0.5), ("", -0.5)]
        {
            assert_eq!(score(&r, c, &gold), want, "{c:?}");
        }
        assert!(r.check_reference(&json!({"label": "neutral"})).is_err());
        assert!(r.check_reference(&json!({"label": "negative"})).is_ok());
    }
}
