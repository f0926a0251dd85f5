//! The [`Reward`] trait and the types that every reward shares.

use rayon::prelude::*;
use serde_json::Value;

/// One completion to score, with the prompt it answers and its example's reference data.
#[derive(Clone, Copy, Debug)]
pub struct RewardInput<'a> {
    /// The prompt the policy was given.
    pub prompt: &'a str,
    /// The generated text only (no prompt, no special tokens).
    pub completion: &'a str,
    /// The example's reference data: a JSON object (for example `{"answer": "42"}`).
    pub reference: &'a Value,
    /// The completion's length in tokens of the caller's tokenizer, used by the length rewards.
    /// [`RewardInput::new`] sets it to the number of chars, which is exact for a char-level tokenizer.
    pub completion_len: usize,
}

impl<'a> RewardInput<'a> {
    /// An input whose length is counted in chars; see [`RewardInput::with_len`].
    pub fn new(prompt: &'a str, completion: &'a str, reference: &'a Value) -> Self {
        Self { prompt, completion, reference, completion_len: completion.chars().count() }
    }

    /// Sets the completion length to `tokens` (as the trainer's tokenizer counts it).
    pub fn with_len(mut self, tokens: usize) -> Self {
        self.completion_len = tokens;
        self
    }
}

/// The outcome of scoring one completion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Score {
    /// A finite score.
    Value(f64),
    /// The reward cannot judge this completion (for example the reference is not checkable); the
    /// trainer leaves it out of baselines and means instead of counting it as zero.
    Unscorable,
}

impl Score {
    /// The score, or `None` when unscorable.
    pub fn value(self) -> Option<f64> {
        match self {
            Score::Value(v) => Some(v),
            Score::Unscorable => None,
        }
    }
}

impl From<f64> for Score {
    fn from(v: f64) -> Self {
        Score::Value(v)
    }
}

/// A score with its parts: `components[i]` is the unweighted score of `Reward::component_names()[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// What the trainer optimises.
    pub total: Score,
    /// One entry per component, for per-reward metrics.
    pub components: Vec<Score>,
}

/// Why a reward could not score a completion (distinct from a low score).
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// The example's reference data lacks a field the reward needs, or has the wrong type.
    #[error("reward `{reward}`: reference field `{field}`: {reason}")]
    Reference { reward: String, field: String, reason: String },
    /// The reward was configured with impossible settings.
    #[error("reward `{reward}`: invalid configuration: {reason}")]
    Config { reward: String, reason: String },
    /// The external reward program failed on one example (crash, timeout or malformed answer).
    #[error("external reward `{command}` failed on {example}: {reason}")]
    External { command: String, example: String, reason: String },
    /// The external reward program could not be started.
    #[error("external reward `{command}` could not start: {reason}")]
    ExternalStart { command: String, reason: String },
    /// A reward returned NaN or an infinity.
    #[error("reward `{reward}` returned the non-finite score {value} on {example}")]
    NonFinite { reward: String, value: f64, example: String },
    /// Any other failure of a user's reward.
    #[error("reward `{reward}`: {message}")]
    Custom { reward: String, message: String },
}

/// A verifiable reward: scores a completion given its prompt and the example's reference data.
///
/// Implement [`Reward::name`] and [`Reward::score`]; the other methods have defaults. Rewards are
/// `Send + Sync` because [`Reward::score_batch`] scores a batch in parallel.
pub trait Reward: Send + Sync {
    /// A short name, used as the metric key (`rewards/<name>/mean`) and in error messages.
    fn name(&self) -> &str;

    /// Scores one completion.
    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError>;

    /// Checks that `reference` has the fields this reward reads, so a dataset can be validated
    /// once at load time (with the line named) instead of failing mid-training.
    fn check_reference(&self, _reference: &Value) -> Result<(), RewardError> {
        Ok(())
    }

    /// The names of the parts reported by [`Reward::score_components`] (one part by default).
    fn component_names(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }

    /// Scores one completion and reports each part separately (composite rewards override this).
    fn score_components(&self, input: &RewardInput<'_>) -> Result<Scored, RewardError> {
        let s = self.score(input)?;
        Ok(Scored { total: s, components: vec![s] })
    }

    /// Scores a batch in parallel; result `i` belongs to `inputs[i]` whatever the thread count,
    /// and non-finite scores become [`RewardError::NonFinite`].
    fn score_batch(&self, inputs: &[RewardInput<'_>]) -> Vec<Result<Scored, RewardError>> {
        inputs.par_iter().map(|input| score_checked(self, input)).collect()
    }
}

/// [`Reward::score_components`] followed by the finiteness check that [`Reward::score_batch`] promises.
pub fn score_checked<R: Reward + ?Sized>(reward: &R, input: &RewardInput<'_>) -> Result<Scored, RewardError> {
    let scored = reward.score_components(input)?;
    for s in std::iter::once(&scored.total).chain(&scored.components) {
        if let Score::Value(v) = *s
            && !v.is_finite()
        {
            return Err(RewardError::NonFinite {
                reward: reward.name().to_string(),
                value: v,
                example: describe_example(input.prompt),
            });
        }
    }
    Ok(scored)
}

/// Names an example in error messages by its prompt, quoted and cut to 60 chars.
pub fn describe_example(prompt: &str) -> String {
    const MAX: usize = 60;
    if prompt.chars().count() <= MAX {
        format!("the example with prompt {prompt:?}")
    } else {
        let head: String = prompt.chars().take(MAX).collect();
        format!("the example with prompt {head:?}…")
    }
}

impl<R: Reward + ?Sized> Reward for Box<R> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        (**self).score(input)
    }
    fn check_reference(&self, reference: &Value) -> Result<(), RewardError> {
        (**self).check_reference(reference)
    }
    fn component_names(&self) -> Vec<String> {
        (**self).component_names()
    }
    fn score_components(&self, input: &RewardInput<'_>) -> Result<Scored, RewardError> {
        (**self).score_components(input)
    }
    fn score_batch(&self, inputs: &[RewardInput<'_>]) -> Vec<Result<Scored, RewardError>> {
        (**self).score_batch(inputs)
    }
}

/// A reward made from a closure; see [`reward_fn`].
pub struct FnReward<F> {
    name: String,
    f: F,
}

/// Wraps a closure as a [`Reward`] named `name`.
pub fn reward_fn<F>(name: impl Into<String>, f: F) -> FnReward<F>
where
    F: Fn(&RewardInput<'_>) -> Result<Score, RewardError> + Send + Sync,
{
    FnReward { name: name.into(), f }
}

impl<F> Reward for FnReward<F>
where
    F: Fn(&RewardInput<'_>) -> Result<Score, RewardError> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        (self.f)(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_keeps_order_and_rejects_non_finite() {
        let r = reward_fn("len", |x| {
            Ok(if x.completion == "nan" { f64::NAN } else { x.completion.len() as f64 }.into())
        });
        let reference = json!({});
        let texts = ["a", "bbb", "nan", ""];
        let inputs: Vec<_> = texts.iter().map(|t| RewardInput::new("p", t, &reference)).collect();
        let out = r.score_batch(&inputs);
        assert_eq!(out[0].as_ref().unwrap().total, Score::Value(1.0));
        assert_eq!(out[1].as_ref().unwrap().total, Score::Value(3.0));
        assert!(matches!(out[2], Err(RewardError::NonFinite { .. })));
        assert_eq!(out[3].as_ref().unwrap().components, vec![Score::Value(0.0)]);
    }

    #[test]
    fn long_prompts_are_cut_in_messages() {
        let d = describe_example(&"x".repeat(500));
        assert!(d.len() < 100 && d.ends_with('…'));
    }
}
