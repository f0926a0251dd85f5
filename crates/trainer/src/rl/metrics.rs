//! The RL run's `metrics.jsonl` (one line per step; field names follow TRL and verl where they have
//! one, and are documented in `docs/METRICS.md`) and `completions.jsonl` (the completions table).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The metrics of one RL step. Optional fields are absent when they do not apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RlStepMetrics {
    /// RL steps completed, this one included (0: the evaluation before the first step).
    pub step: u64,
    /// Learning rate.
    pub lr: f64,
    /// Mean reward of the step's scorable completions (kept groups).
    pub reward_mean: Option<f64>,
    /// Their standard deviation.
    pub reward_std: Option<f64>,
    /// Mean of each reward component, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewards: BTreeMap<String, f64>,
    /// Fraction of sampled groups whose rewards all agreed (no signal for group baselines).
    pub frac_reward_zero_std: f64,
    /// Kept groups / sampled groups (dynamic sampling's pass rate; 1 without it).
    pub pass_rate: f64,
    /// Sampling rounds this step.
    pub rounds: u64,
    /// Completions in the update.
    pub sequences: u64,
    /// Advantage mean, std, min, max over the masked tokens.
    pub adv_mean: Option<f64>,
    /// See `adv_mean`.
    pub adv_std: Option<f64>,
    /// See `adv_mean`.
    pub adv_min: Option<f64>,
    /// See `adv_mean`.
    pub adv_max: Option<f64>,
    /// Mean per-token KL to the reference (the configured estimator), when there is one.
    pub kl: Option<f64>,
    /// The KL coefficient in force.
    pub kl_coef: f64,
    /// Mean per-token entropy of the policy (of logits / T) on the completions.
    pub entropy: Option<f64>,
    /// Fraction of tokens whose ratio was clipped from below (A < 0, ρ < 1 − ε_low).
    pub clip_frac_low: f64,
    /// Fraction clipped from above (A > 0, ρ > 1 + ε_high).
    pub clip_frac_high: f64,
    /// Fraction bounded by the dual clip.
    pub dual_clip_frac: f64,
    /// Mean and extremes of the importance ratio.
    pub ratio_mean: Option<f64>,
    /// See `ratio_mean`.
    pub ratio_min: Option<f64>,
    /// See `ratio_mean`.
    pub ratio_max: Option<f64>,
    /// Mean of log π_old − log π (k1) over the update's tokens.
    pub approx_kl: Option<f64>,
    /// Largest |log π_old − sampler log-prob| over the completion tokens, when log π_old is
    /// computed by a training forward (off-policy passes, GAE, KL in the reward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logp_diff_max: Option<f64>,
    /// The policy loss (mean over optimizer steps of the step).
    pub policy_loss: Option<f64>,
    /// The value loss (PPO with a critic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_loss: Option<f64>,
    /// Fraction of value predictions clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_clip_frac: Option<f64>,
    /// Gradient norm before clipping (the last optimizer step of the RL step).
    pub grad_norm: Option<f64>,
    /// Optimizer steps taken in this RL step.
    pub updates: u64,
    /// True when the guard skipped an update.
    pub skipped: bool,
    /// Non-finite updates so far.
    pub nonfinite_total: u64,
    /// Completion length in tokens: mean, min, max.
    pub completion_len_mean: f64,
    /// See `completion_len_mean`.
    pub completion_len_min: u64,
    /// See `completion_len_mean`.
    pub completion_len_max: u64,
    /// Fraction of completions cut by the length limit.
    pub truncated_frac: f64,
    /// Seconds generating, scoring, computing old/reference log-probs, and updating (wall-clock).
    pub time_gen_s: f64,
    /// See `time_gen_s`.
    pub time_score_s: f64,
    /// See `time_gen_s`.
    pub time_logprobs_s: f64,
    /// See `time_gen_s`.
    pub time_update_s: f64,
    /// Of `time_update_s`: seconds in the forward passes and losses, and in the backward passes
    /// (with the gradients' accumulation); the rest is clipping and the optimizer.
    #[serde(default)]
    pub time_forward_s: f64,
    /// See `time_forward_s`.
    #[serde(default)]
    pub time_backward_s: f64,
    /// Generated tokens per second of the whole step (wall-clock).
    pub tokens_per_sec: f64,
    /// Seconds since the run started (wall-clock).
    pub elapsed_s: f64,
    /// Greedy accuracy on the held-out prompts, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
    /// Mean reward of the greedy held-out completions, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_reward: Option<f64>,
}

/// The fields that depend on wall-clock time; everything else is reproducible bit for bit.
pub const RL_WALL_CLOCK_FIELDS: &[&str] = &[
    "time_gen_s",
    "time_score_s",
    "time_logprobs_s",
    "time_update_s",
    "time_forward_s",
    "time_backward_s",
    "tokens_per_sec",
    "elapsed_s",
];

/// One row of the completions table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRow {
    /// The RL step.
    pub step: u64,
    /// The prompt text.
    pub prompt: String,
    /// The completion text.
    pub completion: String,
    /// The reward (none: unscorable).
    pub reward: Option<f64>,
    /// Each reward component, by name.
    pub components: BTreeMap<String, Option<f64>>,
    /// The completion's advantage (mean over its tokens).
    pub advantage: f64,
    /// `eos`, `stop` or `length`.
    pub finish_reason: String,
    /// Completion length in tokens.
    pub tokens: u64,
}

/// Mean and (population) standard deviation; `None` for no values.
pub fn mean_std(values: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}
