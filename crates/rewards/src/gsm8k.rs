//! Final-answer extraction in the GSM8K convention (`#### <number>`), as verl scores it.

use crate::normalize::canonical_number;
use crate::reference::get_text;
use crate::{Reward, RewardError, RewardInput, Score};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

static STRICT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#### (-?[0-9.,]+)").expect("static regex"));
static FLEXIBLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(-?[0-9.,]+)").expect("static regex"));

/// How the final answer is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gsm8kMode {
    /// The last `#### <number>`; commas and `$` removed. This also checks the output format.
    Strict,
    /// The last run of digits, `.`, `,` (with an optional leading `-`) that is not a lone `.`; kept verbatim.
    Flexible,
}

/// Extracts the final answer from `text` as verl's `gsm8k.extract_solution` does: only the last
/// `window` chars are searched (300 in verl; `None` searches everything) and the **last** match wins.
pub fn extract_gsm8k(text: &str, mode: Gsm8kMode, window: Option<usize>) -> Option<String> {
    let text = match window {
        Some(w) => tail_chars(text, w),
        None => text,
    };
    match mode {
        Gsm8kMode::Strict => {
            let last = STRICT.captures_iter(text).last()?.get(1)?.as_str();
            Some(last.replace([',', '$'], ""))
        }
        Gsm8kMode::Flexible => {
            let found: Vec<&str> = FLEXIBLE.find_iter(text).map(|m| m.as_str()).collect();
            // Python's `for x in reversed(found): if x not in ("", "."): break` leaves x at found[0]
            // when every candidate is invalid; we keep that quirk.
            let pick = found.iter().rev().find(|s| **s != "." && !s.is_empty()).or(found.first())?;
            Some(pick.to_string())
        }
    }
}

/// The last `n` chars of `s` (Python's `s[-n:]`).
fn tail_chars(s: &str, n: usize) -> &str {
    match s.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &s[i..],
        _ if n == 0 => "",
        _ => s,
    }
}

/// GSM8K answer reward: `score` (1.0) when the extracted answer equals the reference, `format_score`
/// (0.0) when an answer was extracted but differs, 0.0 when none was found.
///
/// The comparison is verl's string equality by default (so `"42."` ≠ `"42"`); [`Gsm8k::numeric`]
/// compares canonical numbers instead. The reference is the field `answer`: a number, a number as
/// text, or a full GSM8K solution ending in `#### <number>` (commas removed).
#[derive(Clone, Debug)]
pub struct Gsm8k {
    mode: Gsm8kMode,
    window: Option<usize>,
    numeric: bool,
    field: String,
    score: f64,
    format_score: f64,
}

impl Gsm8k {
    /// Strict mode with verl's defaults.
    pub fn strict() -> Self {
        Self::with_mode(Gsm8kMode::Strict)
    }

    /// Flexible mode with verl's defaults.
    pub fn flexible() -> Self {
        Self::with_mode(Gsm8kMode::Flexible)
    }

    fn with_mode(mode: Gsm8kMode) -> Self {
        Self {
            mode,
            window: Some(300),
            numeric: false,
            field: "answer".into(),
            score: 1.0,
            format_score: 0.0,
        }
    }

    /// Search the last `chars` chars only (`None`: the whole completion, as TinyZero and nanochat).
    pub fn window(mut self, chars: Option<usize>) -> Self {
        self.window = chars;
        self
    }

    /// Compare canonical numbers (`"42."`, `"42.0"` and `"042"` equal `"42"`; flexible answers lose commas).
    pub fn numeric(mut self) -> Self {
        self.numeric = true;
        self
    }

    /// Reads the reference from `field` instead of `answer`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// The scores for a correct answer and for a wrong but extracted one.
    pub fn scores(mut self, score: f64, format_score: f64) -> Self {
        self.score = score;
        self.format_score = format_score;
        self
    }

    fn ground_truth(&self, reference: &Value) -> Result<String, RewardError> {
        let raw = get_text(self.name(), reference, &self.field)?;
        // A full GSM8K solution: keep what follows the last "#### ", without commas (verl preprocessing).
        match extract_gsm8k(&raw, Gsm8kMode::Strict, None) {
            Some(a) if raw.contains("#### ") => Ok(a),
            _ => Ok(raw.trim().to_string()),
        }
    }

    fn same(&self, got: &str, want: &str) -> bool {
        if !self.numeric {
            return got == want;
        }
        let canon = |s: &str| canonical_number(&s.replace(',', ""));
        matches!((canon(got), canon(want)), (Some(a), Some(b)) if a == b)
    }
}

impl Reward for Gsm8k {
    fn name(&self) -> &str {
        "gsm8k"
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        self.ground_truth(reference).map(|_| ())
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        let want = self.ground_truth(input.reference)?;
        let s = match extract_gsm8k(input.completion, self.mode, self.window) {
            None => 0.0,
            Some(got) if self.same(&got, &want) => self.score,
            Some(_) => self.format_score,
        };
        Ok(Score::Value(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extraction_matches_verl() {
        use Gsm8kMode::*;
        let w = Some(300);
        assert_eq!(extract_gsm8k("so #### 1,234", Strict, w).as_deref(), Some("1234"));
        assert_eq!(extract_gsm8k("#### 3 then #### -5", Strict, w).as_deref(), Some("-5"));
        assert_eq!(extract_gsm8k("####5", Strict, w), None);
        assert_eq!(extract_gsm8k("the answer is 42.", Strict, w), None);
        assert_eq!(extract_gsm8k("the answer is 42.", Flexible, w).as_deref(), Some("42."));
        assert_eq!(extract_gsm8k("1, 2 and 3.", Flexible, w).as_deref(), Some("3."));
        assert_eq!(extract_gsm8k("end .", Flexible, w).as_deref(), Some("."));
        assert_eq!(extract_gsm8k("no digits", Flexible, w), None);
        assert_eq!(extract_gsm8k("٤٢", Flexible, w), None);
        // The window: an answer more than 300 chars from the end is not seen.
        let far = format!("#### 7{}", " ".repeat(300));
        assert_eq!(extract_gsm8k(&far, Strict, w), None);
        assert_eq!(extract_gsm8k(&far, Strict, None).as_deref(), Some("7"));
        assert_eq!(tail_chars("héllo", 3), "llo");
        assert_eq!(tail_chars("ab", 5), "ab");
        assert_eq!(tail_chars("ab", 0), "");
    }

    #[test]
    fn scores() {
        let gold = json!({"answer": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072"});
        let strict = Gsm8k::strict();
        let s = |r: &Gsm8k, c: &str| r.score(&RewardInput::new("q", c, &gold)).unwrap().value().unwrap();
        assert_eq!(s(&strict, "... #### 1072"), 1.0);
        assert_eq!(s(&strict, "... #### 1,072"), 1.0);
        assert_eq!(s(&strict, "#### 1072 #### 5"), 0.0);
        assert_eq!(s(&strict, "1072"), 0.0);
        assert_eq!(s(&strict, "#### 1072."), 0.0);
        assert_eq!(s(&strict.clone().numeric(), "#### 1072."), 1.0);
        assert_eq!(s(&Gsm8k::flexible(), "so it is 1072"), 1.0);
        assert_eq!(s(&Gsm8k::flexible(), "so it is 1,072"), 0.0);
        assert_eq!(s(&Gsm8k::flexible().numeric(), "so it is 1,072"), 1.0);
        assert_eq!(s(&Gsm8k::strict().scores(1.0, 0.1), "#### 9"), 0.1);
        assert_eq!(s(&strict, ""), 0.0);
        assert_eq!(s(&strict, &"#### 1072 ".repeat(10_000)), 1.0);
    }
}
