//! One RL step's work between sampling and bookkeeping: rewards → advantages → update passes, and
//! the step's statistics.

use std::collections::BTreeMap;
use std::time::Instant;

use ndarray::Array2;
use pglm_autograd::Float;
use pglm_sampler::FinishReason;

use crate::TrainError;
use crate::guard::Verdict;
use crate::metrics::finite;
use crate::rl::advantage::{self as adv, MovingBaseline};
use crate::rl::config::{Estimator, KlPlacement, RlConfig};
use crate::rl::loss::{kl_values, token_weights};
use crate::rl::metrics::{CompletionRow, RlStepMetrics, mean_std};
use crate::rl::rollout::{self, Rollout, Sample};
use crate::rl::trainer::RlTrainer;
use crate::rl::update::{LossInputs, PassStats, accumulate, rows_of, score_reference, score_sequences};

/// What a step hands back to the trainer.
pub(crate) struct StepOut {
    /// The step's metrics (without step number, evaluation and clock).
    pub metrics: RlStepMetrics,
    /// The first completions of the step, for the table.
    pub completions: Vec<CompletionRow>,
    /// `Some(what)` when the guard stopped the run.
    pub stop: Option<&'static str>,
}

/// Each completion's reward for the baselines: its score, or for an unscorable one the mean of
/// its group's scorable ones (0 when none is), so that it moves no baseline; it then gets no
/// gradient either (its mask row is cleared by the caller).
fn filled_rewards(samples: &[Sample], g: usize) -> Vec<f64> {
    samples
        .chunks(g)
        .flat_map(|group| {
            let scored: Vec<f64> = group.iter().filter_map(|s| s.reward).collect();
            let mean = if scored.is_empty() { 0.0 } else { scored.iter().sum::<f64>() / scored.len() as f64 };
            group.iter().map(move |s| s.reward.unwrap_or(mean))
        })
        .collect()
}

/// Sequence-level and token-level advantages (and GAE's returns) for the configured estimator.
/// `kl` is the per-token KL to the reference when it goes into the reward, with its β.
fn advantages(
    config: &RlConfig,
    baseline: &mut MovingBaseline,
    rewards: &[f64],
    mask: &Array2<f64>,
    kl: Option<(&Array2<f64>, f64)>,
    values: Option<&Array2<f64>>,
) -> (Array2<f64>, Option<Array2<f64>>) {
    let a = &config.algorithm;
    let g = config.rollout.group_size;
    // Sequence-level estimators take the KL in the reward as its sum over the sequence (RLOO, TRL).
    let seq_rewards = || -> Vec<f64> {
        match kl {
            Some((k, beta)) => rewards.iter().zip(k.rows()).map(|(r, row)| r - beta * row.sum()).collect(),
            None => rewards.to_vec(),
        }
    };
    match a.estimator {
        Estimator::Reinforce => {
            (adv::broadcast(&baseline.advantages(&seq_rewards(), a.baseline_decay), mask), None)
        }
        Estimator::Rloo => (adv::broadcast(&adv::rloo(&seq_rewards(), g), mask), None),
        Estimator::Grpo => {
            (adv::broadcast(&adv::grpo(&seq_rewards(), g, a.std_scale, a.adv_eps), mask), None)
        }
        Estimator::ReinforcePp => {
            (adv::reinforce_pp(&adv::token_rewards(rewards, mask, kl), mask, a.gamma), None)
        }
        // verl's form: the sequence's summed token rewards (KL included) centred in its group.
        Estimator::ReinforcePpBaseline => {
            (adv::reinforce_pp_baseline(&adv::token_rewards(rewards, mask, kl), mask, g), None)
        }
        Estimator::Gae => {
            let values = values.expect("GAE runs with the critic's values");
            let (adv, returns) =
                adv::gae(&adv::token_rewards(rewards, mask, kl), values, mask, a.gamma, a.lambda);
            (adv, Some(returns))
        }
    }
}

/// One step: rollout, advantages, update passes, statistics.
pub(crate) fn rl_step<F: Float>(t: &mut RlTrainer<F>, lr: f64, step: u64) -> Result<StepOut, TrainError> {
    let t0 = Instant::now();
    let rollout = t.rollout(step)?;
    let cfg = t.config.clone();
    let g = cfg.rollout.group_size;
    let mut m = RlStepMetrics { lr, kl_coef: t.kl_coef, rounds: rollout.rounds as u64, ..Default::default() };
    sample_stats(&mut m, &rollout, &t.component_names, g);
    let n = rollout.samples.len();
    m.sequences = n as u64;
    if n == 0 {
        // Dynamic sampling found no group with signal: nothing to learn from this step.
        m.time_gen_s = rollout.gen_secs;
        m.time_score_s = rollout.score_secs;
        m.tokens_per_sec = rollout.tokens_generated as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        return Ok(StepOut { metrics: m, completions: Vec::new(), stop: None });
    }

    // log π_old (and the critic's values) and log π_ref, before any update.
    let t1 = Instant::now();
    let mut batch = rollout::batch::<F>(&rollout.samples, &t.prompts, t.pad, cfg.filter.mask_truncated);
    for (i, s) in rollout.samples.iter().enumerate() {
        if s.reward.is_none() {
            batch.mask.row_mut(i).fill(0.0);
        }
    }
    let temperature = f64::from(cfg.rollout.temperature);
    let micro = cfg.update.micro_batch_size.unwrap_or(n);
    let gae = cfg.algorithm.estimator == Estimator::Gae;
    let critic_only = gae && step < cfg.algorithm.critic_warmup;
    let kl_on = t.reference.is_some() && t.kl_coef > 0.0;
    let kl_in_reward = kl_on && cfg.kl.placement == KlPlacement::Reward;
    let multi_pass = cfg.update.epochs > 1 || cfg.update.mini_batches > 1;
    let (old_logp, old_values) = if multi_pass || gae || kl_in_reward {
        let (lp, v) = score_sequences(&t.policy, &batch, temperature, gae, micro)?;
        (Some(lp), v)
    } else {
        (None, None)
    };
    let ref_logp = match (&t.reference, &mut t.ref_scorer, kl_on) {
        // Each group's prompt runs once (KV-cache path); equal to the tape's up to rounding.
        (Some(r), Some(scorer), true) => Some(score_reference(
            scorer,
            r,
            &rollout.samples,
            &t.prompts,
            cfg.rollout.temperature,
            batch.mask.ncols(),
        )?),
        _ => None,
    };
    m.time_logprobs_s = t1.elapsed().as_secs_f64();
    if let Some(lp) = &old_logp {
        // The sampler's log-probabilities against the training forward's (TRL's
        // `sampling_logp_difference`): rounding only, since both compute log_softmax(z / T).
        let diff = lp.iter().zip(&batch.sampler_logp).zip(&batch.full_mask).filter(|(_, w)| **w > 0.0);
        m.logp_diff_max =
            diff.map(|((a, b), _)| (Float::to_f64(*a) - Float::to_f64(*b)).abs()).reduce(f64::max);
    }

    // Rewards → advantages.
    let rewards = filled_rewards(&rollout.samples, g);
    let to64 = |a: &Array2<F>| a.mapv(Float::to_f64);
    let kl_tok = ref_logp.as_ref().map(|r| {
        let current = old_logp.as_ref().unwrap_or(&batch.sampler_logp);
        kl_values(cfg.kl.estimator, &to64(current), &to64(r), &batch.full_mask)
    });
    if let Some(k) = &kl_tok {
        m.kl = finite(k.sum() / batch.full_mask.sum().max(1.0));
    }
    let kl_for_reward = if kl_in_reward { kl_tok.as_ref().map(|k| (k, t.kl_coef)) } else { None };
    let values64 = old_values.as_ref().map(to64);
    let (adv64, returns) =
        advantages(&cfg, &mut t.baseline, &rewards, &batch.full_mask, kl_for_reward, values64.as_ref());
    adv_stats(&mut m, &adv64, &batch.mask);
    let inputs = LossInputs {
        adv: adv64.mapv(F::of),
        old_logp,
        ref_logp: if kl_on && !kl_in_reward { ref_logp } else { None },
        values: match (old_values, returns) {
            (Some(v), Some(r)) => Some((v, r.mapv(F::of))),
            _ => None,
        },
        critic_only,
    };

    // Update passes.
    let t2 = Instant::now();
    let mini = n.div_ceil(cfg.update.mini_batches);
    let mut totals = PassStats::default();
    let mut stop = None;
    for epoch in 0..cfg.update.epochs {
        let order = t.pass_order(step, epoch, n);
        for rows in order.chunks(mini) {
            // Rollout order inside the mini-batch, so that a group's members sit together and
            // share their prompt's forward (`update::accumulate`); the order does not change the sum.
            let mut rows = rows.to_vec();
            rows.sort_unstable();
            let rows = &rows[..];
            let weights = token_weights(
                cfg.algorithm.aggregation,
                &rows_of(&batch.mask, rows),
                cfg.rollout.max_new_tokens as f64,
            );
            t.policy.params.zero_grad();
            let s = accumulate(&mut t.policy, &cfg, &batch, &inputs, rows, &weights, t.kl_coef, micro)?;
            let loss = s.policy_loss + t.kl_coef * s.kl_loss + cfg.algorithm.value_coef * s.value_loss;
            let (grad_norm, verdict) = t.apply(loss, lr);
            m.updates += 1;
            m.grad_norm = finite(grad_norm);
            totals.merge(&s);
            match verdict {
                Verdict::Apply => {}
                Verdict::Skip { .. } => m.skipped = true,
                Verdict::Stop { what } => {
                    m.skipped = true;
                    stop = Some(what);
                }
            }
            if stop.is_some() {
                break;
            }
        }
        if stop.is_some() {
            break;
        }
    }
    m.time_update_s = t2.elapsed().as_secs_f64();
    m.time_forward_s = totals.forward_s;
    m.time_backward_s = totals.backward_s;
    m.nonfinite_total = t.guard.state.total;
    let updates = m.updates.max(1) as f64;
    m.policy_loss = finite(totals.policy_loss / updates);
    let p = totals.policy_means();
    m.clip_frac_low = p.clip_frac_low;
    m.clip_frac_high = p.clip_frac_high;
    m.dual_clip_frac = p.dual_clip_frac;
    m.ratio_mean = finite(p.ratio_mean);
    m.ratio_min = finite(p.ratio_min);
    m.ratio_max = finite(p.ratio_max);
    m.approx_kl = finite(p.approx_kl);
    // Critic-warmup steps compute no logits for the update, hence no entropy.
    m.entropy = if critic_only { None } else { finite(totals.entropy_sum / totals.tokens.max(1.0)) };
    if gae {
        m.value_loss = finite(totals.value_loss / updates);
        m.value_clip_frac = finite(totals.value_clip / totals.tokens.max(1.0));
    }

    // The adaptive KL controller sees the step's KL per token (verl's convention), once per step.
    if let (Some(target), Some(kl)) = (cfg.kl.target, m.kl) {
        let mut c = crate::rl::loss::AdaptiveKl { coef: t.kl_coef, target, horizon: cfg.kl.horizon };
        c.update(kl, n as f64);
        t.kl_coef = c.coef;
    }
    m.time_gen_s = rollout.gen_secs;
    m.time_score_s = rollout.score_secs;
    m.tokens_per_sec = rollout.tokens_generated as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    let completions = table(t, &rollout, &adv64, &batch.full_mask, cfg.log.completions_per_step);
    Ok(StepOut { metrics: m, completions, stop })
}

/// Rewards, lengths and truncation of the kept samples; the flat-group fraction of all sampled.
fn sample_stats(m: &mut RlStepMetrics, rollout: &Rollout, names: &[String], g: usize) {
    let s = &rollout.samples;
    let (mean, std) = mean_std(s.iter().filter_map(|x| x.reward));
    m.reward_mean = mean.and_then(finite);
    m.reward_std = std.and_then(finite);
    for (k, name) in names.iter().enumerate() {
        if let (Some(v), _) = mean_std(s.iter().filter_map(|x| x.components.get(k).copied().flatten())) {
            m.rewards.insert(name.clone(), v);
        }
    }
    let sampled = rollout.groups_sampled.max(1) as f64;
    m.frac_reward_zero_std = rollout.groups_flat as f64 / sampled;
    m.pass_rate = (s.len() / g) as f64 / sampled;
    let lens: Vec<usize> = s.iter().map(|x| x.completion.tokens.len()).collect();
    if !lens.is_empty() {
        m.completion_len_mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        m.completion_len_min = *lens.iter().min().unwrap_or(&0) as u64;
        m.completion_len_max = *lens.iter().max().unwrap_or(&0) as u64;
        let cut = s.iter().filter(|x| x.completion.finish_reason == FinishReason::Length).count();
        m.truncated_frac = cut as f64 / s.len() as f64;
    }
}

/// Mean, std, min, max of the advantages over the masked tokens.
fn adv_stats(m: &mut RlStepMetrics, adv: &Array2<f64>, mask: &Array2<f64>) {
    let vals: Vec<f64> = adv.iter().zip(mask.iter()).filter(|(_, w)| **w > 0.0).map(|(a, _)| *a).collect();
    let (mean, std) = mean_std(vals.iter().copied());
    m.adv_mean = mean;
    m.adv_std = std;
    m.adv_min = vals.iter().copied().reduce(f64::min);
    m.adv_max = vals.iter().copied().reduce(f64::max);
}

/// The first `limit` completions of the step as table rows.
fn table<F: Float>(
    t: &RlTrainer<F>,
    rollout: &Rollout,
    adv: &Array2<f64>,
    mask: &Array2<f64>,
    limit: usize,
) -> Vec<CompletionRow> {
    rollout
        .samples
        .iter()
        .enumerate()
        .take(limit)
        .map(|(i, s)| {
            let n = mask.row(i).sum().max(1.0);
            let advantage = adv.row(i).iter().zip(mask.row(i)).map(|(a, w)| a * w).sum::<f64>() / n;
            let components: BTreeMap<String, Option<f64>> =
                t.component_names.iter().cloned().zip(s.components.iter().copied()).collect();
            CompletionRow {
                step: 0,
                prompt: t.prompts[s.prompt].text.clone(),
                completion: s.completion.text.clone(),
                reward: s.reward,
                components,
                advantage,
                finish_reason: format!("{:?}", s.completion.finish_reason).to_lowercase(),
                tokens: s.completion.tokens.len() as u64,
            }
        })
        .collect()
}
