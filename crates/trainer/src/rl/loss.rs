//! Policy-gradient losses on the autograd tape: the policy surrogate ([`policy_loss`]), the KL
//! penalty ([`kl_loss`]), the value loss ([`value_loss`]) and the per-token weights that aggregate
//! them ([`token_weights`]).
//!
//! Every loss is a weighted sum `Σ_{i,t} w_{i,t} ℓ_{i,t}` over the tokens of a batch, with the
//! weights from [`token_weights`]: the aggregation mode (GRPO's per-sequence mean, DAPO's token
//! mean, ...) lives entirely in `w`, so the losses of micro-batches (row slices of `w`) simply add
//! up to the loss of the optimizer batch. Padding has `w = 0` and contributes exactly nothing.
//!
//! Arrays are `(n, L)` like the log-probabilities `logp` on the tape; a shape mismatch panics with
//! the function's name and both shapes.

use ndarray::Array2;
use pglm_autograd::{Float, Tape, Var};
use serde::{Deserialize, Serialize};

pub mod kl;
pub mod policy;
pub mod value;

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) mod gradcheck;

pub use kl::{AdaptiveKl, KlEstimator, kl_loss, kl_values};
pub use policy::{PolicyLossConfig, PolicyLossKind, PolicyStats, PolicyTerms, RatioLevel, policy_loss};
pub use value::value_loss;

/// How per-token losses are averaged into the batch loss (the names are verl's `loss_agg_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each sequence's tokens, then over sequences: `w = m / (|o_i| N)` (GRPO paper,
    /// TRL `grpo`, verl `seq-mean-token-mean`). Short completions weigh more per token.
    SeqMeanTokenMean,
    /// Mean over all valid tokens of the batch: `w = m / Σ m` (DAPO, TRL `dapo`/`bnpo`, verl
    /// `token-mean`).
    TokenMean,
    /// Sum over each sequence's tokens, mean over sequences: `w = m / N` (verl
    /// `seq-mean-token-sum`); the REINFORCE estimate of the gradient of the mean sequence reward.
    SeqMeanTokenSum,
    /// Sum over tokens divided by a constant: `w = m / (N C)` with `C` the generation budget
    /// (Dr. GRPO; TRL `dr_grpo`, where `C = max_completion_length`).
    TokenSumNorm,
}

/// Per-token weights `w` such that a batch's loss is `Σ_{i,t} w_{i,t} ℓ_{i,t}`; `N` is the number
/// of rows of `mask` (the optimizer batch) and `norm_constant` is `C` of [`Aggregation::TokenSumNorm`]
/// (ignored by the other modes). Sequences without valid tokens get zero weight (never NaN).
///
/// # Panics
/// If `agg` is `TokenSumNorm` and `norm_constant` is not a positive finite number.
pub fn token_weights(agg: Aggregation, mask: &Array2<f64>, norm_constant: f64) -> Array2<f64> {
    let n = mask.nrows() as f64;
    let mut w = mask.clone();
    match agg {
        Aggregation::SeqMeanTokenMean => {
            for mut row in w.rows_mut() {
                let len: f64 = row.sum();
                // w = m / (|o_i| N); an empty row stays all zeros.
                let scale = if len > 0.0 { 1.0 / (len * n) } else { 0.0 };
                row.mapv_inplace(|m| m * scale);
            }
        }
        Aggregation::TokenMean => {
            let total: f64 = mask.sum();
            let scale = if total > 0.0 { 1.0 / total } else { 0.0 };
            w.mapv_inplace(|m| m * scale);
        }
        Aggregation::SeqMeanTokenSum => {
            let scale = if n > 0.0 { 1.0 / n } else { 0.0 };
            w.mapv_inplace(|m| m * scale);
        }
        Aggregation::TokenSumNorm => {
            assert!(
                norm_constant.is_finite() && norm_constant > 0.0,
                "token_weights: TokenSumNorm needs a positive norm constant, got {norm_constant}"
            );
            let scale = if n > 0.0 { 1.0 / (n * norm_constant) } else { 0.0 };
            w.mapv_inplace(|m| m * scale);
        }
    }
    w
}

/// `Σ_{i,t} w_{i,t} x_{i,t}` as a 0-d var (e.g. the entropy bonus with `x = tape.entropy(logits)`).
///
/// # Panics
/// If `x` and `weights` differ in shape.
pub fn weighted_sum<F: Float>(tape: &mut Tape<F>, x: Var, weights: &Array2<F>) -> Var {
    check_shape("weighted_sum", "weights", tape.shape(x), weights);
    let w = constant(tape, weights);
    let wx = tape.mul(x, w);
    tape.sum_all(wx)
}

/// Puts a 2-d array on the tape as a constant.
pub(crate) fn constant<F: Float>(tape: &mut Tape<F>, a: &Array2<F>) -> Var {
    tape.constant(a.clone().into_dyn())
}

/// Panics unless `a` has the shape `want` of the var it goes with.
pub(crate) fn check_shape<F>(op: &str, what: &str, want: &[usize], a: &Array2<F>) {
    assert!(
        want == a.shape(),
        "{op}: {what} of shape {:?} does not match the log-probabilities' shape {want:?}",
        a.shape()
    );
}

/// `1` where the weight is non-zero, `0` elsewhere: which tokens count when only weights are given.
pub(crate) fn support<F: Float>(weights: &Array2<F>) -> Array2<F> {
    weights.mapv(|w| if w != F::zero() { F::one() } else { F::zero() })
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, array};

    use super::*;

    #[test]
    fn token_weights_by_hand() {
        let mask = array![[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]];
        // N = 3. GRPO: 1/(|o_i| N): row 0 → 1/6, row 1 → 1/3, the empty row → 0.
        let w = token_weights(Aggregation::SeqMeanTokenMean, &mask, 0.0);
        assert_eq!(w, array![[1.0 / 6.0, 1.0 / 6.0, 0.0], [1.0 / 3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]);
        // DAPO: 1/Σm = 1/3 on each valid token.
        let w = token_weights(Aggregation::TokenMean, &mask, 0.0);
        assert_eq!(w, &mask / 3.0);
        // seq-mean-token-sum: 1/N.
        assert_eq!(token_weights(Aggregation::SeqMeanTokenSum, &mask, 0.0), &mask / 3.0);
        // Dr. GRPO: 1/(N C) with C = 4.
        assert_eq!(token_weights(Aggregation::TokenSumNorm, &mask, 4.0), &mask / 12.0);
        // Nothing valid: zeros, no NaN.
        let empty = Array2::<f64>::zeros((2, 3));
        for agg in [Aggregation::SeqMeanTokenMean, Aggregation::TokenMean] {
            assert_eq!(token_weights(agg, &empty, 1.0), empty);
        }
    }

    #[test]
    fn weighted_losses_equal_the_verl_aggregations() {
        let mask = array![[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]];
        let l = array![[0.5, -1.0, 2.0, 9.0], [3.0, 0.25, 7.0, 7.0]];
        let sum = |w: &Array2<f64>| (w * &l).sum();
        // seq-mean-token-mean: mean_i (Σ_t m ℓ / Σ_t m) = ((1.5/3) + (3.25/2)) / 2.
        let w = token_weights(Aggregation::SeqMeanTokenMean, &mask, 0.0);
        assert!((sum(&w) - (1.5 / 3.0 + 3.25 / 2.0) / 2.0).abs() < 1e-15);
        // token-mean: Σ m ℓ / Σ m = 4.75 / 5.
        let w = token_weights(Aggregation::TokenMean, &mask, 0.0);
        assert!((sum(&w) - 4.75 / 5.0).abs() < 1e-15);
        // seq-mean-token-sum: mean_i Σ_t m ℓ = 4.75 / 2; Dr. GRPO with C = 4: 4.75 / 8.
        let w = token_weights(Aggregation::SeqMeanTokenSum, &mask, 0.0);
        assert!((sum(&w) - 4.75 / 2.0).abs() < 1e-15);
        let w = token_weights(Aggregation::TokenSumNorm, &mask, 4.0);
        assert!((sum(&w) - 4.75 / 8.0).abs() < 1e-15);
        // Micro-batches add up: the rows' partial sums give the batch loss.
        let parts: f64 = (0..2).map(|i| (&w.row(i) * &l.row(i)).sum()).sum();
        assert!((parts - sum(&w)).abs() < 1e-15);
    }

    #[test]
    fn weighted_sum_value_and_gradient() {
        let mut tape = Tape::<f64>::new();
        let x = tape.input(ArrayD::from_shape_vec(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        let w = array![[0.5, 0.0], [-1.0, 0.25]];
        let s = weighted_sum(&mut tape, x, &w);
        // Σ w x = 0.5 − 3 + 1 = −1.5; the gradient is w itself.
        assert_eq!(tape.value(s).iter().copied().collect::<Vec<_>>(), vec![-1.5]);
        let g = tape.backward(s);
        assert_eq!(g.wrt(x).unwrap(), &w.into_dyn());
    }
}
