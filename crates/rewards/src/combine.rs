//! Weighted sums of rewards, each component reported separately.

use crate::{Reward, RewardError, RewardInput, Score, Scored};
use serde_json::Value;

/// `R = Σ_k w_k · R_k`. Each component's unweighted score is reported in [`Scored::components`]
/// under its reward's name (made unique with `#2`, `#3` … when names repeat). If any component
/// is unscorable, the total is too; if any fails, the sum fails with that error.
#[derive(Default)]
pub struct WeightedSum {
    name: String,
    parts: Vec<(String, f64, Box<dyn Reward>)>,
}

impl WeightedSum {
    /// An empty sum named `weighted_sum` (its total is 0 until components are added).
    pub fn new() -> Self {
        Self { name: "weighted_sum".into(), parts: Vec::new() }
    }

    /// Renames the sum.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds `weight · reward`.
    pub fn add(mut self, weight: f64, reward: impl Reward + 'static) -> Self {
        let base = reward.name().to_string();
        let mut name = base.clone();
        let mut k = 1;
        while self.parts.iter().any(|(n, ..)| *n == name) {
            k += 1;
            name = format!("{base}#{k}");
        }
        self.parts.push((name, weight, Box::new(reward)));
        self
    }

    /// The components' weights, in order.
    pub fn weights(&self) -> Vec<f64> {
        self.parts.iter().map(|p| p.1).collect()
    }
}

impl Reward for WeightedSum {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        self.parts.iter().try_for_each(|(_, _, r)| r.check_reference(reference))
    }

    fn component_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.0.clone()).collect()
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        Ok(self.score_components(input)?.total)
    }

    fn score_components(&self, input: &RewardInput<'_>) -> Result<Scored, RewardError> {
        let mut components = Vec::with_capacity(self.parts.len());
        let mut total = Some(0.0);
        for (_, w, r) in &self.parts {
            let s = r.score(input)?;
            total = match (total, s) {
                (Some(t), Score::Value(v)) => Some(t + w * v),
                _ => None,
            };
            components.push(s);
        }
        Ok(Scored { total: total.map_or(Score::Unscorable, Score::Value), components })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExactMatch, FormatReward, reward_fn};
    use serde_json::json;

    #[test]
    fn sums_weights_and_reports_parts() {
        let sum = WeightedSum::new()
            .add(1.0, ExactMatch::new())
            .add(0.5, FormatReward::new(r"^\d+$").unwrap())
            .add(0.25, FormatReward::new(r"^4").unwrap());
        assert_eq!(sum.component_names(), vec!["exact_match", "format", "format#2"]);
        let gold = json!({"answer": "42"});
        let out = sum.score_batch(&[RewardInput::new("q", "42", &gold), RewardInput::new("q", "x", &gold)]);
        let a = out[0].as_ref().unwrap();
        assert_eq!(a.total, Score::Value(1.75));
        assert_eq!(a.components, vec![Score::Value(1.0), Score::Value(1.0), Score::Value(1.0)]);
        let b = out[1].as_ref().unwrap();
        assert_eq!(b.total, Score::Value(0.0));
        assert!(sum.check_reference(&json!({})).is_err());
    }

    #[test]
    fn unscorable_and_errors_propagate() {
        let unsure = reward_fn("unsure", |_| Ok(Score::Unscorable));
        let sum = WeightedSum::new().add(1.0, ExactMatch::new()).add(1.0, unsure);
        let gold = json!({"answer": "1"});
        let s = sum.score_components(&RewardInput::new("q", "1", &gold)).unwrap();
        assert_eq!(s.total, Score::Unscorable);
        assert_eq!(s.components[0], Score::Value(1.0));
        assert!(sum.score(&RewardInput::new("q", "1", &json!({}))).is_err());
    }
}
