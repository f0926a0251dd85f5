//! The update: log-probabilities of the rollout under the current policy, the RL loss of
//! `rl::loss`, and its gradient accumulated over micro-batches.
//!
//! The loss of an optimizer (mini-)batch is `L = Σ_{i,t} w_{i,t} ℓ_{i,t}` with the per-token
//! weights of the aggregation computed over the whole mini-batch (`loss::token_weights`), so a
//! micro-batch's loss is just its rows' share of the sum and the accumulated gradient equals the
//! mini-batch's, whatever the micro-batch size.

use std::time::Instant;

use ndarray::{Array2, ArrayD, Axis, Ix2};
use pglm_autograd::{Float, Tape, Var};
use pglm_model::{Gpt, Hidden, SharedRows};
use pglm_sampler::Scorer;

use crate::TrainError;
use crate::rl::config::RlConfig;
use crate::rl::loss::{self, PolicyStats};
use crate::rl::rollout::{RolloutBatch, Sample, TaskPrompt, per_token};

/// Per-position inputs of the loss, for every sequence of the rollout.
pub struct LossInputs<F> {
    /// Advantages `(N, W)` (zero outside the completions).
    pub adv: Array2<F>,
    /// log π_old at the sampled tokens; `None`: the single on-policy pass, where π_old is the
    /// current policy itself (its values, detached, in the same forward: the ratio is exactly 1).
    pub old_logp: Option<Array2<F>>,
    /// log π_ref, when the KL term is in the loss.
    pub ref_logp: Option<Array2<F>>,
    /// The critic's values at rollout time and the GAE returns (PPO with a critic).
    pub values: Option<(Array2<F>, Array2<F>)>,
    /// Train the value head alone (critic warmup): no policy, KL or entropy term, and the value
    /// head reads the hidden states detached, so the shared trunk gets no gradient either.
    pub critic_only: bool,
}

/// What one optimizer step's passes measured (sums over micro-batches; see [`PassStats::add`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct PassStats {
    /// Σ of the micro-batches' policy losses (= the mini-batch's policy loss).
    pub policy_loss: f64,
    /// Σ of the value losses.
    pub value_loss: f64,
    /// Value clip fraction × tokens.
    pub value_clip: f64,
    /// Σ of the weighted KL terms (the mini-batch's β-free KL loss).
    pub kl_loss: f64,
    /// Σ entropy over the masked tokens.
    pub entropy_sum: f64,
    /// The policy loss's statistics, token-weighted sums (see `add`).
    pub policy: PolicyStats,
    /// Masked tokens seen.
    pub tokens: f64,
    /// Wall-clock seconds in the forward passes with their losses, and in the backward passes
    /// with the accumulation of the gradients (not deterministic; for the metrics only).
    pub forward_s: f64,
    /// See `forward_s`.
    pub backward_s: f64,
}

impl PassStats {
    /// Adds a micro-batch's policy statistics (fractions and means over its tokens).
    fn add_policy(&mut self, s: &PolicyStats) {
        let sums = PolicyStats {
            clip_frac_low: s.clip_frac_low * s.tokens,
            clip_frac_high: s.clip_frac_high * s.tokens,
            dual_clip_frac: s.dual_clip_frac * s.tokens,
            ratio_mean: s.ratio_mean * s.tokens,
            approx_kl: s.approx_kl * s.tokens,
            ..*s
        };
        self.merge(&PassStats { policy: sums, ..PassStats::default() });
    }

    /// Adds another pass's (or micro-batch's) sums.
    pub fn merge(&mut self, o: &PassStats) {
        self.policy_loss += o.policy_loss;
        self.value_loss += o.value_loss;
        self.value_clip += o.value_clip;
        self.kl_loss += o.kl_loss;
        self.entropy_sum += o.entropy_sum;
        self.tokens += o.tokens;
        self.forward_s += o.forward_s;
        self.backward_s += o.backward_s;
        let (p, s) = (&mut self.policy, &o.policy);
        if s.tokens > 0.0 {
            let first = p.tokens == 0.0;
            p.ratio_min = if first { s.ratio_min } else { p.ratio_min.min(s.ratio_min) };
            p.ratio_max = if first { s.ratio_max } else { p.ratio_max.max(s.ratio_max) };
        }
        p.clip_frac_low += s.clip_frac_low;
        p.clip_frac_high += s.clip_frac_high;
        p.dual_clip_frac += s.dual_clip_frac;
        p.ratio_mean += s.ratio_mean;
        p.approx_kl += s.approx_kl;
        p.tokens += s.tokens;
    }

    /// The policy statistics as means over tokens.
    pub fn policy_means(&self) -> PolicyStats {
        let p = &self.policy;
        let n = p.tokens.max(1.0);
        PolicyStats {
            clip_frac_low: p.clip_frac_low / n,
            clip_frac_high: p.clip_frac_high / n,
            dual_clip_frac: p.dual_clip_frac / n,
            ratio_mean: p.ratio_mean / n,
            approx_kl: p.approx_kl / n,
            ..*p
        }
    }
}

/// Rows `rows` of a 2-D array.
pub fn rows_of<T: Clone>(a: &Array2<T>, rows: &[usize]) -> Array2<T> {
    a.select(Axis(0), rows)
}

/// Accumulates into `policy.params`' gradients the gradient of the loss of the mini-batch `rows`,
/// whose per-token weights are `weights` (one row per entry of `rows`), in micro-batches of
/// `micro` sequences.
#[allow(clippy::too_many_arguments)]
pub fn accumulate<F: Float>(
    policy: &mut Gpt<F>,
    config: &RlConfig,
    batch: &RolloutBatch<F>,
    inputs: &LossInputs<F>,
    rows: &[usize],
    weights: &Array2<f64>,
    kl_coef: f64,
    micro: usize,
) -> Result<PassStats, TrainError> {
    // On one of rayon's workers, each of the pass's hundreds of parallel ops costs a fork-join
    // between workers (about 2 µs) instead of a hand-over from outside the pool (10-20 µs), and
    // fills of a few hundred KB run on both threads (`pglm_autograd`'s `fill`): the GRPO step's
    // forward and loss took about 4 ms less (docs/PERFORMANCE.md).
    rayon::scope(|_| {
        let alg = &config.algorithm;
        let pcfg = alg.policy_loss();
        let temperature = f64::from(config.rollout.temperature);
        let kl_in_loss = kl_coef > 0.0 && inputs.ref_logp.is_some();
        let mut stats = PassStats::default();
        for (k, chunk) in rows.chunks(micro.max(1)).enumerate() {
            let offset = k * micro.max(1);
            let local: Vec<usize> = (offset..offset + chunk.len()).collect();
            let ids = batch.ids.select(Axis(0), chunk);
            let targets = batch.targets.select(Axis(0), chunk);
            let mask64 = rows_of(&batch.mask, chunk);
            let mask: Array2<F> = mask64.mapv(F::of);
            let w: Array2<F> = rows_of(weights, &local).mapv(F::of);
            let adv = rows_of(&inputs.adv, chunk);

            let t_forward = Instant::now();
            let mut tape = Tape::new();
            let hidden = forward_rollout(policy, &mut tape, &ids)?;
            // Σ of the loss terms so far (`add` folds the next one in).
            let mut total: Option<Var> = None;
            let add = |tape: &mut Tape<F>, total: Option<Var>, term: Var| match total {
                Some(t) => tape.add(t, term),
                None => term,
            };
            if !inputs.critic_only {
                let mut logits = policy.logits(&mut tape, hidden);
                if temperature != 1.0 {
                    logits = tape.mul_scalar(logits, 1.0 / temperature);
                }
                let logp = tape.token_log_probs(logits, &targets); // (n, W)
                let old = match &inputs.old_logp {
                    Some(o) => rows_of(o, chunk),
                    None => as2(tape.value(logp)),
                };
                let terms = loss::policy_loss(&mut tape, logp, &old, &adv, &mask, &w, &pcfg);
                stats.policy_loss += scalar(&tape, terms.loss);
                stats.add_policy(&terms.stats);
                total = Some(terms.loss);

                if kl_in_loss && let Some(r) = &inputs.ref_logp {
                    let kl = loss::kl_loss(&mut tape, logp, &rows_of(r, chunk), &w, config.kl.estimator);
                    stats.kl_loss += scalar(&tape, kl);
                    let scaled = tape.mul_scalar(kl, kl_coef);
                    total = Some(add(&mut tape, total, scaled));
                }

                let entropy = tape.entropy(logits); // (n, W)
                stats.entropy_sum += masked_sum(tape.value(entropy), &mask64);
                if alg.entropy_coef != 0.0 {
                    let bonus = loss::weighted_sum(&mut tape, entropy, &w);
                    let scaled = tape.mul_scalar(bonus, -alg.entropy_coef);
                    total = Some(add(&mut tape, total, scaled));
                }
            }

            if let Some((old_values, returns)) = &inputs.values {
                // In critic warmup the head learns on frozen features: the trunk is the policy's too.
                let hidden =
                    if inputs.critic_only { Hidden { h: tape.detach(hidden.h), ..hidden } } else { hidden };
                let v = policy.values(&mut tape, hidden)?;
                let (vl, clip_frac) = loss::value_loss(
                    &mut tape,
                    v,
                    &rows_of(old_values, chunk),
                    &rows_of(returns, chunk),
                    &w,
                    alg.value_clip,
                );
                stats.value_loss += scalar(&tape, vl);
                stats.value_clip += clip_frac * mask64.sum();
                let scaled = tape.mul_scalar(vl, alg.value_coef);
                total = Some(add(&mut tape, total, scaled));
            }
            stats.tokens += mask64.sum();

            let Some(total) = total else {
                continue; // critic warmup without a critic cannot happen (validated); nothing to learn
            };
            let t_backward = Instant::now();
            stats.forward_s += (t_backward - t_forward).as_secs_f64();
            let grads = tape.backward(total);
            drop(tape); // release the tape's shares of the weights before they are updated
            grads.accumulate_into(&mut policy.params);
            stats.backward_s += t_backward.elapsed().as_secs_f64();
        }
        Ok(stats)
    })
}

/// log π (and the critic's values, when `values`) of every rollout sequence under `model`, with
/// no gradient, in micro-batches of `micro`.
pub fn score_sequences<F: Float>(
    model: &Gpt<F>,
    batch: &RolloutBatch<F>,
    temperature: f64,
    values: bool,
    micro: usize,
) -> Result<(Array2<F>, Option<Array2<F>>), TrainError> {
    // On a worker of the pool, as `accumulate`.
    rayon::scope(|_| {
        let n = batch.mask.nrows();
        let mut logps = Vec::new();
        let mut vals = Vec::new();
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(micro.max(1)) {
            let ids = batch.ids.select(Axis(0), chunk);
            let targets = batch.targets.select(Axis(0), chunk);
            let mut tape = Tape::no_grad();
            let hidden = forward_rollout(model, &mut tape, &ids)?;
            let mut logits = model.logits(&mut tape, hidden);
            if temperature != 1.0 {
                logits = tape.mul_scalar(logits, 1.0 / temperature);
            }
            let logp = tape.token_log_probs(logits, &targets);
            logps.push(as2(tape.value(logp)));
            if values {
                let v = model.values(&mut tape, hidden)?;
                vals.push(as2(tape.value(v)));
            }
        }
        let cat = |parts: Vec<Array2<F>>| -> Array2<F> {
            let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
            ndarray::concatenate(Axis(0), &views).expect("chunks share the width")
        };
        Ok((cat(logps), values.then(|| cat(vals))))
    })
}

/// log π at every completion token of `samples` under a frozen `model` (the reference), on the
/// KV-cache path of [`Scorer`]: each group's prompt runs once, then its completions. Laid out as
/// the rollout batch (`(N, width)`, completion token `j` at position `P - 1 + j`, 0 elsewhere).
/// It equals what [`score_sequences`] computes on the tape up to rounding (tested in the sampler).
pub fn score_reference<F: Float>(
    scorer: &mut Scorer<F>,
    model: &Gpt<F>,
    samples: &[Sample],
    prompts: &[TaskPrompt],
    temperature: f32,
    width: usize,
) -> Result<Array2<F>, TrainError> {
    let pairs: Vec<(&[u32], &[u32])> =
        samples.iter().map(|s| (&prompts[s.prompt].ids[..], &s.completion.tokens[..])).collect();
    let logps = scorer.score(model, &pairs, temperature)?;
    Ok(per_token(samples, prompts, width, |i, j| f64::from(logps[i][j])))
}

/// The hidden states of rollout sequences `ids` under `model`, each prefix that consecutive
/// sequences share (a group's prompt) computed once ([`SharedRows`]) when that stores at least a
/// tenth fewer positions; otherwise the plain forward, which skips the shared path's gathers.
fn forward_rollout<F: Float>(
    model: &Gpt<F>,
    tape: &mut Tape<F>,
    ids: &ArrayD<u32>,
) -> Result<Hidden, TrainError> {
    let shared = SharedRows::of(ids)?;
    Ok(if shared.rows() * 10 <= shared.positions() * 9 {
        model.forward_shared(tape, &shared)?
    } else {
        model.forward(tape, ids, None)?
    })
}

/// A tape value known to be 2-D.
fn as2<F: Clone>(a: &ArrayD<F>) -> Array2<F> {
    a.clone().into_dimensionality::<Ix2>().expect("a (n, W) array")
}

/// The value of a 0-d var.
fn scalar<F: Float>(tape: &Tape<F>, v: pglm_autograd::Var) -> f64 {
    Float::to_f64(*tape.value(v).iter().next().expect("a scalar"))
}

/// Σ x·m over the masked positions.
fn masked_sum<F: Float>(x: &ArrayD<F>, mask: &Array2<f64>) -> f64 {
    x.iter().zip(mask.iter()).filter(|(_, m)| **m > 0.0).map(|(v, _)| Float::to_f64(*v)).sum()
}
