//! The policy surrogate: REINFORCE (`−A log π`) or PPO's clipped ratio objective, at the token or
//! the sequence level (GSPO), with optional dual clipping.

use ndarray::{Array2, ArrayD, Zip};
use pglm_autograd::{Float, Tape, Var};
use serde::{Deserialize, Serialize};

use super::{check_shape, constant};

/// verl clamps the log-ratio to this range before `exp`, so a stale token cannot overflow.
const LOG_RATIO_CLAMP: f64 = 20.0;

/// Which surrogate to differentiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyLossKind {
    /// `ℓ = −A · log π`: REINFORCE, valid on-policy only (the old log-probs are ignored).
    Vanilla,
    /// `ℓ = −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A)`: PPO-clip (Schulman et al. 2017, eq. 7).
    Clip,
}

/// Where the importance ratio is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioLevel {
    /// `ρ_{i,t} = π(y_{i,t}) / π_old(y_{i,t})` per token (PPO, GRPO).
    Token,
    /// `s_i = exp(mean_t log(π/π_old))` per sequence, shared by its tokens (GSPO).
    Sequence,
}

/// The policy loss's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyLossConfig {
    /// REINFORCE or PPO-clip.
    pub kind: PolicyLossKind,
    /// `ε_low`: the ratio is clipped below at `1 − ε_low` (0.2 in PPO).
    pub clip_low: f64,
    /// `ε_high`: the ratio is clipped above at `1 + ε_high` (0.2 in PPO, 0.28 in DAPO).
    pub clip_high: f64,
    /// Dual-clip `c > 1` (Ye et al. 2020; verl `clip_ratio_c`, 3 by default): for `A < 0` the loss
    /// is capped at `−c A`, so a very large ratio cannot push a bad token's probability further.
    pub dual_clip: Option<f64>,
    /// Token-level or sequence-level (GSPO) ratio.
    pub ratio_level: RatioLevel,
}

impl PolicyLossConfig {
    /// Whether the settings make sense: `0 ≤ ε_low < 1`, `ε_high ≥ 0`, `c > 1`.
    pub fn is_valid(&self) -> bool {
        let eps_ok =
            (0.0..1.0).contains(&self.clip_low) && self.clip_high >= 0.0 && self.clip_high.is_finite();
        eps_ok && self.dual_clip.is_none_or(|c| c > 1.0 && c.is_finite())
    }
}

/// What [`policy_loss`] returns.
#[derive(Clone, Copy, Debug)]
pub struct PolicyTerms {
    /// `Σ w ℓ`, a 0-d var.
    pub loss: Var,
    /// Diagnostics over the valid tokens.
    pub stats: PolicyStats,
}

/// Diagnostics of one policy-loss evaluation, over its valid tokens (`mask > 0`). Fractions are of
/// valid tokens; average them over micro-batches weighted by `tokens`. All 0 when nothing is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PolicyStats {
    /// Tokens clipped at the lower bound with no gradient: `A < 0` and `ρ < 1 − ε_low`.
    pub clip_frac_low: f64,
    /// Tokens clipped at the upper bound with no gradient: `A > 0` and `ρ > 1 + ε_high`.
    pub clip_frac_high: f64,
    /// Tokens capped by the dual clip: `A < 0` and `ρ > c`.
    pub dual_clip_frac: f64,
    /// Mean ratio (the sequence ratio for [`RatioLevel::Sequence`]).
    pub ratio_mean: f64,
    /// Smallest ratio.
    pub ratio_min: f64,
    /// Largest ratio.
    pub ratio_max: f64,
    /// `mean(log π_old − log π)`, the k1 estimate of KL(π_old ‖ π) (verl `ppo_kl`).
    pub approx_kl: f64,
    /// Valid tokens counted.
    pub tokens: f64,
}

/// The policy loss `Σ_{i,t} w_{i,t} ℓ_{i,t}` of the current log-probabilities `logp` (an `(n, L)`
/// var on the tape) of the sampled tokens.
///
/// - [`PolicyLossKind::Vanilla`]: `ℓ = −A log π` (REINFORCE; `old_logp` only feeds the stats).
/// - [`PolicyLossKind::Clip`]: `ρ = exp(log π − log π_old)` per token, or per sequence
///   `s_i = exp(Σ_t m (log π − log π_old) / |o_i|)` for [`RatioLevel::Sequence`];
///   `ℓ = −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A)`, and with a dual clip `c`,
///   `ℓ = min(ℓ, −c A)` where `A < 0`. The log-ratio is clamped to ±20 first (as verl).
///
/// The advantages and log-ratios are multiplied by `mask`, so padding contributes exactly zero
/// value and zero gradient whatever `logp`, `old_logp` or `adv` hold there.
///
/// Gradient facts (tested): on-policy (`old_logp` = the values of `logp`) the clip loss has exactly
/// the REINFORCE gradient `−w A ∇log π`; tokens on the clipped side (`A > 0, ρ > 1 + ε_high` or
/// `A < 0, ρ < 1 − ε_low`) and dual-clipped ones get exactly zero gradient.
///
/// # Panics
/// If an array's shape differs from `logp`'s, or `cfg` is not [`PolicyLossConfig::is_valid`].
pub fn policy_loss<F: Float>(
    tape: &mut Tape<F>,
    logp: Var,
    old_logp: &Array2<F>,
    adv: &Array2<F>,
    mask: &Array2<F>,
    weights: &Array2<F>,
    cfg: &PolicyLossConfig,
) -> PolicyTerms {
    let shape = tape.shape(logp).to_vec();
    for (what, a) in [("old_logp", old_logp), ("adv", adv), ("mask", mask), ("weights", weights)] {
        check_shape("policy_loss", what, &shape, a);
    }
    assert!(cfg.is_valid(), "policy_loss: invalid config {cfg:?}");
    // The advantages the loss sees: zero on padding.
    let a = adv * mask;
    match cfg.kind {
        PolicyLossKind::Vanilla => {
            // Σ w (−A log π) as one product with the constant −w A.
            let coef = Zip::from(weights).and(&a).map_collect(|&w, &a| -(w * a));
            let c = constant(tape, &coef);
            let wl = tape.mul(logp, c);
            let loss = tape.sum_all(wl);
            let ratio = token_log_ratio(tape.value(logp), old_logp, mask).mapv(f64::exp);
            let stats = stats(&ratio, tape.value(logp), old_logp, &a, mask, None);
            PolicyTerms { loss, stats }
        }
        PolicyLossKind::Clip => clip_loss(tape, logp, old_logp, &a, mask, weights, cfg),
    }
}

/// PPO-clip with optional dual clip, at the token or the sequence level.
fn clip_loss<F: Float>(
    tape: &mut Tape<F>,
    logp: Var,
    old_logp: &Array2<F>,
    a: &Array2<F>,
    mask: &Array2<F>,
    weights: &Array2<F>,
    cfg: &PolicyLossConfig,
) -> PolicyTerms {
    let old = constant(tape, old_logp);
    let m = constant(tape, mask);
    let diff = tape.sub(logp, old);
    // log ρ = m (log π − log π_old): 0 on padding, so ρ = 1 there and nothing overflows.
    let log_ratio = tape.mul(diff, m);
    let log_rho = match cfg.ratio_level {
        RatioLevel::Token => log_ratio,
        RatioLevel::Sequence => {
            // log s_i = Σ_t m (log π − log π_old) / |o_i|, shape (n, 1), broadcast over tokens below.
            let per_seq = tape.sum(log_ratio, &[1], true);
            let inv_len = mask.map_axis(ndarray::Axis(1), |row| {
                let len = row.iter().fold(F::zero(), |s, &v| s + v);
                if len > F::zero() { F::one() / len } else { F::zero() }
            });
            let inv_len = tape.constant(inv_len.insert_axis(ndarray::Axis(1)).into_dyn());
            tape.mul(per_seq, inv_len)
        }
    };
    let log_rho = tape.clamp(log_rho, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let rho = tape.exp(log_rho);
    let adv = constant(tape, a);
    // min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A)
    let surr1 = tape.mul(rho, adv);
    let rho_clipped = tape.clamp(rho, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let surr2 = tape.mul(rho_clipped, adv);
    let mut objective = tape.minimum(surr1, surr2);
    if let Some(c) = cfg.dual_clip {
        // Dual clip: for A < 0 the objective is bounded below by c A (the loss above by −c A).
        let floor = tape.constant(a.mapv(|v| v * F::of(c)).into_dyn());
        let bounded = tape.maximum(objective, floor);
        let negative: ArrayD<bool> = a.mapv(|v| v < F::zero()).into_dyn();
        objective = tape.select(&negative, bounded, objective);
    }
    // loss = Σ w ℓ = Σ (−w) · objective
    let neg_w = constant(tape, &weights.mapv(|w| -w));
    let wl = tape.mul(objective, neg_w);
    let loss = tape.sum_all(wl);

    let rho_values = tape.value(rho);
    let ratio = Array2::from_shape_fn(mask.raw_dim(), |(i, t)| match cfg.ratio_level {
        RatioLevel::Token => rho_values[[i, t]].to_f64(),
        RatioLevel::Sequence => rho_values[[i, 0]].to_f64(),
    });
    let stats = stats(&ratio, tape.value(logp), old_logp, a, mask, Some(cfg));
    PolicyTerms { loss, stats }
}

/// `m (log π − log π_old)` in f64.
fn token_log_ratio<F: Float>(logp: &ArrayD<F>, old: &Array2<F>, mask: &Array2<F>) -> Array2<f64> {
    Array2::from_shape_fn(mask.raw_dim(), |(i, t)| {
        mask[[i, t]].to_f64() * (logp[[i, t]].to_f64() - old[[i, t]].to_f64())
    })
}

/// The diagnostics over the valid tokens; `cfg = None` (REINFORCE) clips nothing.
fn stats<F: Float>(
    ratio: &Array2<f64>,
    logp: &ArrayD<F>,
    old: &Array2<F>,
    a: &Array2<F>,
    mask: &Array2<F>,
    cfg: Option<&PolicyLossConfig>,
) -> PolicyStats {
    let log_ratio = token_log_ratio(logp, old, mask);
    let mut s = PolicyStats { ratio_min: f64::INFINITY, ratio_max: f64::NEG_INFINITY, ..Default::default() };
    for ((i, t), &m) in mask.indexed_iter() {
        if m <= F::zero() {
            continue;
        }
        let (r, adv) = (ratio[[i, t]], a[[i, t]].to_f64());
        s.tokens += 1.0;
        s.ratio_mean += r;
        s.ratio_min = s.ratio_min.min(r);
        s.ratio_max = s.ratio_max.max(r);
        s.approx_kl -= log_ratio[[i, t]];
        if let Some(cfg) = cfg {
            s.clip_frac_low += f64::from(u8::from(adv < 0.0 && r < 1.0 - cfg.clip_low));
            s.clip_frac_high += f64::from(u8::from(adv > 0.0 && r > 1.0 + cfg.clip_high));
            if let Some(c) = cfg.dual_clip {
                s.dual_clip_frac += f64::from(u8::from(adv < 0.0 && r > c));
            }
        }
    }
    if s.tokens == 0.0 {
        return PolicyStats::default();
    }
    for v in [&mut s.clip_frac_low, &mut s.clip_frac_high, &mut s.dual_clip_frac, &mut s.ratio_mean] {
        *v /= s.tokens;
    }
    s.approx_kl /= s.tokens;
    s
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
