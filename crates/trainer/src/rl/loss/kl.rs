//! The KL penalty to a reference policy: Schulman's k1/k2/k3 estimators, as values (for the
//! reward and the metrics) and as a loss on the tape, and Ziegler's adaptive coefficient.

use ndarray::{Array2, Zip};
use pglm_autograd::{Float, Tape, Var};
use serde::{Deserialize, Serialize};

use super::{check_shape, constant, support};

/// Per-token estimators of `KL(π ‖ π_ref)` from `ℓ = log π(y) − log π_ref(y)` at the sampled token
/// `y ~ π` (Schulman 2020, "Approximating KL divergence").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `k1 = ℓ`: unbiased for the KL, high variance, can be negative (verl `kl`, TRL PPO default).
    K1,
    /// `k2 = ℓ²/2`: biased but low variance; its gradient is the true KL gradient in expectation
    /// (verl `mse`).
    K2,
    /// `k3 = exp(−ℓ) − 1 + ℓ`: unbiased and always ≥ 0 (GRPO paper, TRL, verl `low_var_kl`).
    K3,
}

impl KlEstimator {
    /// The estimator's value at one log-ratio `ℓ`.
    pub fn of(self, l: f64) -> f64 {
        match self {
            KlEstimator::K1 => l,
            KlEstimator::K2 => 0.5 * l * l,
            KlEstimator::K3 => (-l).exp() - 1.0 + l,
        }
    }
}

/// `k(log π − log π_ref)` per token, 0 on padding (for KL in the reward and for metrics).
///
/// # Panics
/// If the shapes differ.
pub fn kl_values(
    est: KlEstimator,
    logp: &Array2<f64>,
    ref_logp: &Array2<f64>,
    mask: &Array2<f64>,
) -> Array2<f64> {
    check_shape("kl_values", "ref_logp", logp.shape(), ref_logp);
    check_shape("kl_values", "mask", logp.shape(), mask);
    Zip::from(logp)
        .and(ref_logp)
        .and(mask)
        .map_collect(|&p, &r, &m| if m != 0.0 { est.of(p - r) } else { 0.0 })
}

/// The KL loss `Σ_{i,t} w_{i,t} k(log π − log π_ref)` on the tape, differentiated through the
/// current `logp` (the reference is a constant). Tokens with `w = 0` are masked out of `ℓ`
/// itself, so padding contributes exactly zero value and gradient. No clamping (as TRL; verl
/// clamps k3's log-ratio to ±20 and the value to ±10).
///
/// # Panics
/// If an array's shape differs from `logp`'s.
pub fn kl_loss<F: Float>(
    tape: &mut Tape<F>,
    logp: Var,
    ref_logp: &Array2<F>,
    weights: &Array2<F>,
    est: KlEstimator,
) -> Var {
    let shape = tape.shape(logp).to_vec();
    check_shape("kl_loss", "ref_logp", &shape, ref_logp);
    check_shape("kl_loss", "weights", &shape, weights);
    let reference = constant(tape, ref_logp);
    let valid = constant(tape, &support(weights));
    let diff = tape.sub(logp, reference);
    let l = tape.mul(diff, valid); // ℓ = m (log π − log π_ref)
    let k = match est {
        KlEstimator::K1 => l,
        KlEstimator::K2 => {
            let sq = tape.mul(l, l);
            tape.mul_scalar(sq, 0.5) // ℓ²/2
        }
        KlEstimator::K3 => {
            let neg = tape.neg(l);
            let e = tape.exp(neg);
            let e = tape.add_scalar(e, -1.0);
            tape.add(e, l) // exp(−ℓ) − 1 + ℓ
        }
    };
    let w = constant(tape, weights);
    let wk = tape.mul(k, w);
    tape.sum_all(wk)
}

/// Ziegler et al.'s (2019) adaptive KL coefficient, as verl's `AdaptiveKLController`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveKl {
    /// The current coefficient β.
    pub coef: f64,
    /// The KL the controller steers towards.
    pub target: f64,
    /// How many steps a full 20% correction is spread over.
    pub horizon: f64,
}

impl AdaptiveKl {
    /// `e = clip(KL / target − 1, −0.2, 0.2)`, `β ← β (1 + e · n_steps / horizon)`.
    pub fn update(&mut self, current_kl: f64, n_steps: f64) {
        let e = (current_kl / self.target - 1.0).clamp(-0.2, 0.2);
        self.coef *= 1.0 + e * n_steps / self.horizon;
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn kl_values_by_hand() {
        let logp = array![[-1.0, -0.5, -2.0]];
        let reference = array![[-1.5, -0.5, -0.2]];
        let mask = array![[1.0, 1.0, 0.0]];
        // ℓ = (0.5, 0, ·): k1 = ℓ, k2 = ℓ²/2 = 0.125, k3 = e^{−0.5} − 1 + 0.5.
        assert_eq!(kl_values(KlEstimator::K1, &logp, &reference, &mask), array![[0.5, 0.0, 0.0]]);
        assert_eq!(kl_values(KlEstimator::K2, &logp, &reference, &mask), array![[0.125, 0.0, 0.0]]);
        let k3 = (-0.5f64).exp() - 0.5;
        assert_eq!(kl_values(KlEstimator::K3, &logp, &reference, &mask), array![[k3, 0.0, 0.0]]);
    }

    /// For `y ~ π` over a small vocabulary, `E[k1] = E[k3] = KL(π ‖ π_ref)` exactly, `E[k2] ≠ KL`.
    #[test]
    fn k1_and_k3_are_unbiased_k2_is_not() {
        let p = [0.5f64, 0.3, 0.15, 0.05];
        let q = [0.25f64, 0.25, 0.4, 0.1];
        let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        let expect = |est: KlEstimator| p.iter().zip(&q).map(|(p, q)| p * est.of((p / q).ln())).sum::<f64>();
        assert!((expect(KlEstimator::K1) - kl).abs() < 1e-15);
        assert!((expect(KlEstimator::K3) - kl).abs() < 1e-15);
        assert!((expect(KlEstimator::K2) - kl).abs() > 1e-3);
        assert!((0..24).map(|k| -3.0 + 0.25 * k as f64).all(|l| KlEstimator::K3.of(l) >= 0.0));
    }

    #[test]
    fn kl_loss_value_and_gradient_by_hand() {
        let logp = array![[-1.0, -0.5, 3.0]];
        let reference = array![[-1.5, -0.2, -40.0]];
        let w = array![[0.5, 0.5, 0.0]];
        // ℓ = (0.5, −0.3, masked). d k1/dℓ = 1, d k2/dℓ = ℓ, d k3/dℓ = 1 − e^{−ℓ}.
        let l = [0.5f64, -0.3];
        for est in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            let mut tape = Tape::<f64>::new();
            let x = tape.input(logp.clone().into_dyn());
            let loss = kl_loss(&mut tape, x, &reference, &w, est);
            let v = tape.value(loss).iter().next().copied().unwrap();
            let want = 0.5 * (est.of(l[0]) + est.of(l[1]));
            assert!((v - want).abs() < 1e-15, "{est:?}");
            let g = tape.backward(loss).wrt(x).unwrap().clone();
            let d = |l: f64| match est {
                KlEstimator::K1 => 1.0,
                KlEstimator::K2 => l,
                KlEstimator::K3 => 1.0 - (-l).exp(),
            };
            let want_g = [0.5 * d(l[0]), 0.5 * d(l[1]), 0.0];
            for (a, b) in g.iter().zip(want_g) {
                assert!((a - b).abs() < 1e-15, "{est:?}: {g:?}");
            }
        }
    }

    #[test]
    fn adaptive_kl_follows_ziegler() {
        let mut c = AdaptiveKl { coef: 0.1, target: 0.05, horizon: 100.0 };
        // KL = 0.06: e = 0.06/0.05 − 1 = 0.2; β = 0.1 (1 + 0.2·10/100) = 0.102.
        c.update(0.06, 10.0);
        assert!((c.coef - 0.102).abs() < 1e-15);
        // KL far above target: e clipped at 0.2.
        let mut d = AdaptiveKl { coef: 0.1, target: 0.05, horizon: 100.0 };
        d.update(5.0, 10.0);
        assert!((d.coef - 0.102).abs() < 1e-15);
        // KL below target: e = −0.2 at most; at the target nothing changes.
        d.update(0.0, 50.0);
        assert!((d.coef - 0.102 * 0.9).abs() < 1e-15);
        let before = d.coef;
        d.update(0.05, 50.0);
        assert_eq!(d.coef, before);
    }
}
