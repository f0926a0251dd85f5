//! The RL config: where the policy starts, the task, how rollouts are sampled, the algorithm (advantage
//! estimator, policy loss, aggregation, KL, entropy), filtering, and the shared optimizer and run
//! sections. Unknown fields are errors. Each default is chosen so that `pglm rl` on a built-in task
//! works out of the box; the reason for each is next to it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{DecayShape, OptimConfig, RunConfig};
use crate::rl::advantage::StdScale;
use crate::rl::loss::{Aggregation, KlEstimator, PolicyLossConfig, PolicyLossKind, RatioLevel};

/// Everything an RL run is started with (saved as `config.json` in the run directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    /// The starting policy (and the frozen reference, when a KL term is on).
    pub policy: PolicyConfig,
    /// The task: prompts, reward, held-out test set.
    pub task: RlTaskConfig,
    /// How completions are sampled.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// Advantage estimator, policy loss, aggregation, entropy, value head.
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    /// The KL penalty to the reference policy.
    #[serde(default)]
    pub kl: KlConfig,
    /// Dynamic sampling, truncation masking, overlong shaping.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Passes over each rollout and how they are split.
    #[serde(default)]
    pub update: UpdateConfig,
    /// AdamW, its schedule, clipping (RL defaults: see [`rl_optim`]).
    #[serde(default = "rl_optim", deserialize_with = "optim_over_rl_defaults")]
    pub optim: OptimConfig,
    /// Step budget, evaluation, checkpoints, seed, guard, stop condition.
    #[serde(default = "rl_run", deserialize_with = "run_over_rl_defaults")]
    pub run: RunConfig,
    /// The completions table.
    #[serde(default)]
    pub log: LogConfig,
}

/// Where the policy starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A pretraining/SFT run directory (its latest checkpoint and tokenizer), an RL run directory,
    /// or a model file written by `Gpt::save` (which must carry its tokenizer).
    pub init: PathBuf,
}

/// The task trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlTaskConfig {
    /// A built-in task name (`addition`, `countdown`, ...); its reward scores the completions.
    pub name: String,
    /// The task's settings (as in its `task.json`); `null` for the defaults.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Training prompts with their reference data (`train.jsonl` of `pglm data`).
    pub train: PathBuf,
    /// Held-out prompts for greedy accuracy (`test.jsonl`); none: no evaluation.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Test prompts decoded per evaluation (the first ones of the file).
    #[serde(default = "default_eval_examples")]
    pub eval_examples: usize,
}

fn default_eval_examples() -> usize {
    200
}

/// How completions are sampled (see `pglm_sampler::SamplingParams`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Prompts per step (groups).
    pub prompts_per_step: usize,
    /// Completions per prompt, G. At least 2 for the group estimators.
    pub group_size: usize,
    /// Longest completion, in tokens (also Dr. GRPO's normalising constant).
    pub max_new_tokens: usize,
    /// Sampling temperature; log-probabilities are those of logits / temperature.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    pub top_k: usize,
    /// Nucleus mass (1: off).
    pub top_p: f32,
    /// Min-p threshold relative to the top probability (0: off).
    pub min_p: f32,
}

impl Default for RolloutConfig {
    /// 16 × 8 completions per step, as the peers' small GRPO recipes; temperature 1 samples the
    /// policy itself, which keeps the policy gradient unbiased; 16 tokens fit the arithmetic tasks.
    fn default() -> Self {
        RolloutConfig {
            prompts_per_step: 16,
            group_size: 8,
            max_new_tokens: 16,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

/// The advantage estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// REINFORCE with a moving-average baseline.
    Reinforce,
    /// Leave-one-out baseline within each group (RLOO).
    Rloo,
    /// Group-normalised rewards (GRPO; `std_scale = "none"` is Dr. GRPO).
    Grpo,
    /// REINFORCE++: discounted returns whitened over the batch.
    ReinforcePp,
    /// REINFORCE++ with the group mean subtracted from each reward first.
    ReinforcePpBaseline,
    /// Generalised advantage estimation with a value head (PPO with a critic).
    Gae,
}

/// The algorithm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmConfig {
    /// The advantage estimator.
    pub estimator: Estimator,
    /// GRPO's divisor: group std, batch std, or none (Dr. GRPO).
    pub std_scale: StdScale,
    /// ε added to the std (TRL: 1e-4).
    pub adv_eps: f64,
    /// REINFORCE's baseline: b ← decay·b + (1 − decay)·mean(r).
    pub baseline_decay: f64,
    /// `vanilla` (−A·log π, on-policy only) or `clip` (PPO's clipped ratio).
    pub loss: PolicyLossKind,
    /// ε_low: ratios below 1 − ε_low stop pushing down.
    pub clip_low: f64,
    /// ε_high: ratios above 1 + ε_high stop pushing up (DAPO's clip-higher: 0.28).
    pub clip_high: f64,
    /// Dual clip c > 1 (bounds the loss of negative advantages by c·|A|); none: off.
    pub dual_clip: Option<f64>,
    /// Importance ratio per token, or per sequence (GSPO).
    pub ratio_level: RatioLevel,
    /// How token losses are averaged.
    pub aggregation: Aggregation,
    /// Discount γ (REINFORCE++, GAE).
    pub gamma: f64,
    /// GAE's λ.
    pub lambda: f64,
    /// Weight of the value loss (GAE).
    pub value_coef: f64,
    /// Value clipping ε around the rollout's values (GAE); none: off.
    pub value_clip: Option<f64>,
    /// Steps at the start of a GAE run that train only the value head (verl's
    /// `trainer.critic_warmup`): the policy gets no gradient until its critic gives a baseline
    /// (a non-zero `optim.weight_decay` still decays it; RL's default is 0).
    pub critic_warmup: u64,
    /// Weight of the entropy bonus (0: off; entropy is still logged).
    pub entropy_coef: f64,
}

impl Default for AlgorithmConfig {
    /// GRPO as TRL runs it: group std with ε = 1e-4, PPO clip 0.2 both sides, sequence-mean of
    /// token-means, no entropy bonus. γ = λ = 1 (rewards come at the end of short completions).
    fn default() -> Self {
        AlgorithmConfig {
            estimator: Estimator::Grpo,
            std_scale: StdScale::Group,
            adv_eps: 1e-4,
            baseline_decay: 0.9,
            loss: PolicyLossKind::Clip,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            ratio_level: RatioLevel::Token,
            aggregation: Aggregation::SeqMeanTokenMean,
            gamma: 1.0,
            lambda: 1.0,
            value_coef: 0.5,
            value_clip: Some(0.2),
            critic_warmup: 0,
            entropy_coef: 0.0,
        }
    }
}

/// The names [`AlgorithmConfig::preset`] knows.
pub const PRESETS: &[&str] = &["reinforce", "rloo", "grpo", "dr_grpo", "dapo", "gspo", "ppo"];

impl AlgorithmConfig {
    /// A named recipe: the algorithm as its paper (and TRL/verl) configures it.
    pub fn preset(name: &str) -> Option<Self> {
        let base = AlgorithmConfig::default();
        Some(match name {
            // Williams (1992): −(r − b)·log π with a moving baseline; on-policy.
            "reinforce" => {
                AlgorithmConfig { estimator: Estimator::Reinforce, loss: PolicyLossKind::Vanilla, ..base }
            }
            // Ahmadian et al. (2024), as TRL's RLOOTrainer: leave-one-out baseline, clipped ratio.
            "rloo" => AlgorithmConfig { estimator: Estimator::Rloo, ..base },
            "grpo" => base,
            // Liu et al. (2025): no std divisor, token sums over a constant.
            "dr_grpo" => {
                AlgorithmConfig { std_scale: StdScale::None, aggregation: Aggregation::TokenSumNorm, ..base }
            }
            // Yu et al. (2025): clip-higher and the token mean (dynamic sampling is in `filter`).
            "dapo" => AlgorithmConfig { clip_high: 0.28, aggregation: Aggregation::TokenMean, ..base },
            // Zheng et al. (2025): sequence-level ratio with its much tighter clip range.
            "gspo" => {
                AlgorithmConfig { ratio_level: RatioLevel::Sequence, clip_low: 3e-4, clip_high: 4e-4, ..base }
            }
            // Schulman et al. (2017) with a critic: GAE, token mean.
            "ppo" => {
                AlgorithmConfig { estimator: Estimator::Gae, aggregation: Aggregation::TokenMean, ..base }
            }
            _ => return None,
        })
    }

    /// The policy-loss settings.
    pub fn policy_loss(&self) -> PolicyLossConfig {
        PolicyLossConfig {
            kind: self.loss,
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            dual_clip: self.dual_clip,
            ratio_level: self.ratio_level,
        }
    }
}

/// Where the KL penalty goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlPlacement {
    /// β·KL added to the loss (GRPO).
    Loss,
    /// −β·KL added to the rewards before the advantages (PPO-RLHF, RLOO, REINFORCE++).
    Reward,
}

/// The KL penalty to the frozen starting policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KlConfig {
    /// β; 0 turns the term off and loads no reference model (TRL's default since 2025).
    pub coef: f64,
    /// k1, k2 or k3 (Schulman's estimators).
    pub estimator: KlEstimator,
    /// In the loss or in the reward.
    pub placement: KlPlacement,
    /// Adaptive β (Ziegler et al.): the KL per token to aim for; none: β fixed.
    pub target: Option<f64>,
    /// Adaptive β's horizon, in sequences.
    pub horizon: f64,
}

impl Default for KlConfig {
    /// Off; when on, k3 in the loss as GRPO.
    fn default() -> Self {
        KlConfig {
            coef: 0.0,
            estimator: KlEstimator::K3,
            placement: KlPlacement::Loss,
            target: None,
            horizon: 10_000.0,
        }
    }
}

/// Which completions and groups the update sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// DAPO's dynamic sampling: drop groups whose rewards all agree and sample new prompts instead.
    pub dynamic_sampling: bool,
    /// Sampling rounds per step at most (dynamic sampling); the update uses what it has after them.
    pub max_rounds: usize,
    /// Completions cut by the length limit count in the baselines but get no gradient (TRL).
    pub mask_truncated: bool,
    /// DAPO's overlong shaping: the last `overlong_buffer` tokens before `max_new_tokens` cost up
    /// to `overlong_factor` reward, linearly; none: off.
    pub overlong_buffer: Option<usize>,
    /// The largest overlong penalty.
    pub overlong_factor: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            dynamic_sampling: false,
            max_rounds: 4,
            mask_truncated: false,
            overlong_buffer: None,
            overlong_factor: 1.0,
        }
    }
}

/// Passes over each rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Passes over the rollout (PPO epochs; TRL's `num_iterations`). Above 1 is off-policy.
    pub epochs: usize,
    /// Optimizer steps per pass: the rollout's sequences are split into this many mini-batches.
    pub mini_batches: usize,
    /// Sequences per forward/backward pass (gradient accumulation); none: a whole mini-batch.
    pub micro_batch_size: Option<usize>,
}

impl Default for UpdateConfig {
    /// One on-policy update per rollout (TRL's default): the ratio is exactly 1, and the clipped
    /// loss's gradient is the REINFORCE gradient.
    fn default() -> Self {
        UpdateConfig { epochs: 1, mini_batches: 1, micro_batch_size: None }
    }
}

/// The completions table (`completions.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Write the step's completions every this many steps (0: never).
    pub completions_every: u64,
    /// Completions written per table (the first groups of the step).
    pub completions_per_step: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { completions_every: 10, completions_per_step: 32 }
    }
}

/// RL's optimizer defaults: a constant learning rate of 1e-4 after 10 warmup steps, no weight
/// decay (TRL's GRPO default: RL fine-tunes, it should not shrink the SFT weights), Adam's
/// β = (0.9, 0.99), clipping at 1.0 (TRL's `max_grad_norm`).
pub fn rl_optim() -> OptimConfig {
    OptimConfig {
        lr: 1e-4,
        min_lr: 1e-4,
        warmup_steps: 10,
        decay_steps: None,
        schedule: DecayShape::Constant,
        weight_decay: 0.0,
        betas: (0.9, 0.99),
        eps: 1e-8,
        grad_clip: Some(1.0),
    }
}

/// RL's run defaults: 200 steps, evaluation every 20, checkpoints every 50.
pub fn rl_run() -> RunConfig {
    RunConfig { steps: 200, eval_every: 20, checkpoint_every: 50, ..RunConfig::default() }
}

/// Reads a table whose missing keys take `defaults`' values. Without this, serde would fill them
/// from `T::default()` (training's choices): `[optim] lr = 3e-4` alone would bring training's
/// weight decay and 100 warmup steps into an RL run.
fn over_defaults<'de, D, T>(d: D, defaults: T, section: &str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Serialize + serde::de::DeserializeOwned,
{
    use serde::de::Error;
    use serde_json::{Map, Value};
    let given = Map::<String, Value>::deserialize(d)?;
    let Value::Object(defaults) = serde_json::to_value(defaults).map_err(D::Error::custom)? else {
        return Err(D::Error::custom("the defaults are not a table"));
    };
    let merge = |over: Map<String, Value>| {
        let mut merged = defaults.clone();
        merged.extend(over);
        serde_json::from_value::<T>(Value::Object(merged))
    };
    merge(given.clone()).map_err(|e| {
        // serde_json's message does not say which key was wrong: find the first that fails alone.
        let alone = |k: &String| Map::from_iter([(k.clone(), given[k].clone())]);
        match given.keys().find(|k| merge(alone(k)).is_err()) {
            Some(key) if !e.to_string().starts_with("unknown field") => {
                D::Error::custom(format!("{section}.{key}: {e}"))
            }
            _ => D::Error::custom(e),
        }
    })
}

fn optim_over_rl_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OptimConfig, D::Error> {
    over_defaults(d, rl_optim(), "optim")
}

fn run_over_rl_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RunConfig, D::Error> {
    over_defaults(d, rl_run(), "run")
}

/// The metrics an RL stop condition may name.
pub const RL_STOP_METRICS: &[&str] = &["eval_accuracy", "eval_reward", "reward_mean"];

impl RlConfig {
    /// A config with every default, for `task` with prompts in `train` starting from `init`.
    pub fn new(init: impl Into<PathBuf>, task: &str, train: impl Into<PathBuf>) -> Self {
        RlConfig {
            policy: PolicyConfig { init: init.into() },
            task: RlTaskConfig {
                name: task.into(),
                settings: serde_json::Value::Null,
                train: train.into(),
                test: None,
                eval_examples: default_eval_examples(),
            },
            rollout: RolloutConfig::default(),
            algorithm: AlgorithmConfig::default(),
            kl: KlConfig::default(),
            filter: FilterConfig::default(),
            update: UpdateConfig::default(),
            optim: rl_optim(),
            run: rl_run(),
            log: LogConfig::default(),
        }
    }

    /// Does the run need the frozen reference policy?
    pub fn needs_reference(&self) -> bool {
        self.kl.coef > 0.0
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, expected: String| Err(TrainError::config(field, expected));
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let r = &self.rollout;
        if r.prompts_per_step == 0 {
            return bad("rollout.prompts_per_step", "at least 1".into());
        }
        if r.group_size == 0 {
            return bad("rollout.group_size", "at least 1".into());
        }
        if r.max_new_tokens == 0 {
            return bad("rollout.max_new_tokens", "at least 1".into());
        }
        if !(r.temperature.is_finite() && r.temperature > 0.0) {
            return bad(
                "rollout.temperature",
                format!("a positive number (RL samples the policy), got {}", r.temperature),
            );
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return bad("rollout.top_p", format!("in (0, 1], got {}", r.top_p));
        }
        if !(0.0..1.0).contains(&r.min_p) {
            return bad("rollout.min_p", format!("in [0, 1), got {}", r.min_p));
        }

        let a = &self.algorithm;
        let grouped = matches!(a.estimator, Estimator::Rloo | Estimator::ReinforcePpBaseline)
            || (a.estimator == Estimator::Grpo && a.std_scale == StdScale::Group);
        if grouped && r.group_size < 2 {
            return bad(
                "rollout.group_size",
                format!(
                    "at least 2 for the {:?} estimator (it compares completions of a prompt)",
                    a.estimator
                ),
            );
        }
        if !(a.adv_eps.is_finite() && a.adv_eps >= 0.0) {
            return bad("algorithm.adv_eps", format!("a non-negative number, got {}", a.adv_eps));
        }
        if !(0.0..1.0).contains(&a.baseline_decay) {
            return bad("algorithm.baseline_decay", format!("in [0, 1), got {}", a.baseline_decay));
        }
        if !(a.clip_low.is_finite() && a.clip_low > 0.0 && a.clip_low < 1.0) {
            return bad("algorithm.clip_low", format!("in (0, 1), got {}", a.clip_low));
        }
        if !positive(a.clip_high) {
            return bad("algorithm.clip_high", format!("a positive number, got {}", a.clip_high));
        }
        if let Some(c) = a.dual_clip
            && !(c.is_finite() && c > 1.0)
        {
            return bad("algorithm.dual_clip", format!("a number above 1 (or absent), got {c}"));
        }
        if !((0.0..=1.0).contains(&a.gamma) && (0.0..=1.0).contains(&a.lambda)) {
            return bad("algorithm.gamma", format!("γ and λ in [0, 1], got {} and {}", a.gamma, a.lambda));
        }
        if !(a.value_coef.is_finite() && a.value_coef >= 0.0) {
            return bad("algorithm.value_coef", format!("a non-negative number, got {}", a.value_coef));
        }
        if let Some(c) = a.value_clip
            && !positive(c)
        {
            return bad("algorithm.value_clip", format!("a positive number (or absent), got {c}"));
        }
        if a.critic_warmup > 0 && a.estimator != Estimator::Gae {
            return bad(
                "algorithm.critic_warmup",
                format!("0 unless the estimator is \"gae\" (no other has a critic), got {}", a.critic_warmup),
            );
        }
        if !a.entropy_coef.is_finite() {
            return bad("algorithm.entropy_coef", format!("a finite number, got {}", a.entropy_coef));
        }
        let u = &self.update;
        if u.epochs == 0 {
            return bad("update.epochs", "at least 1".into());
        }
        let n = r.prompts_per_step * r.group_size;
        if u.mini_batches == 0 || u.mini_batches > n {
            return bad("update.mini_batches", format!("between 1 and the {n} sequences of a step"));
        }
        if a.loss == PolicyLossKind::Vanilla && (u.epochs > 1 || u.mini_batches > 1) {
            return bad(
                "algorithm.loss",
                "\"clip\" when update.epochs or update.mini_batches is above 1 (the vanilla loss \
                 −A·log π is only correct on-policy)"
                    .into(),
            );
        }
        if u.micro_batch_size == Some(0) {
            return bad("update.micro_batch_size", "at least 1 (or absent)".into());
        }

        let k = &self.kl;
        if !(k.coef.is_finite() && k.coef >= 0.0) {
            return bad("kl.coef", format!("a non-negative number, got {}", k.coef));
        }
        if let Some(t) = k.target
            && !positive(t)
        {
            return bad("kl.target", format!("a positive number (or absent), got {t}"));
        }
        if k.target.is_some() && k.coef == 0.0 {
            return bad("kl.coef", "above 0 when kl.target asks for an adaptive coefficient".into());
        }
        if !positive(k.horizon) {
            return bad("kl.horizon", format!("a positive number, got {}", k.horizon));
        }
        let f = &self.filter;
        if f.max_rounds == 0 {
            return bad("filter.max_rounds", "at least 1".into());
        }
        if let Some(b) = f.overlong_buffer
            && (b == 0 || b > r.max_new_tokens)
        {
            return bad(
                "filter.overlong_buffer",
                format!("between 1 and rollout.max_new_tokens = {}, got {b}", r.max_new_tokens),
            );
        }
        if !(f.overlong_factor.is_finite() && f.overlong_factor >= 0.0) {
            return bad(
                "filter.overlong_factor",
                format!("a non-negative number, got {}", f.overlong_factor),
            );
        }
        if self.task.eval_examples == 0 {
            return bad("task.eval_examples", "at least 1".into());
        }
        self.optim.validate()?;
        self.run.validate(RL_STOP_METRICS)?;
        if let Some(stop) = &self.run.stop
            && stop.metric.starts_with("eval_")
            && self.task.test.is_none()
        {
            return bad("run.stop.metric", format!("{:?} needs task.test (held-out prompts)", stop.metric));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<RlConfig, serde_json::Error> {
        let mut c =
            serde_json::json!({"policy": {"init": "sft"}, "task": {"name": "addition", "train": "t"}});
        c.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
        serde_json::from_value(c)
    }

    #[test]
    fn partial_sections_keep_the_rl_defaults() {
        let c = parse(serde_json::json!({"optim": {"lr": 3e-4}, "run": {"steps": 50}})).unwrap();
        assert_eq!(c.optim, OptimConfig { lr: 3e-4, ..rl_optim() });
        assert_eq!(c.run, RunConfig { steps: 50, ..rl_run() });
        assert_eq!(parse(serde_json::json!({})).unwrap().optim, rl_optim());
    }

    #[test]
    fn partial_sections_still_reject_unknown_keys_and_name_bad_ones() {
        let err = parse(serde_json::json!({"optim": {"lrr": 3e-4}})).unwrap_err().to_string();
        assert!(err.contains("unknown field `lrr`"), "{err}");
        let err = parse(serde_json::json!({"optim": {"lr": 1e-4, "betas": "x"}})).unwrap_err().to_string();
        assert!(err.contains("optim.betas: invalid type"), "{err}");
    }
}
