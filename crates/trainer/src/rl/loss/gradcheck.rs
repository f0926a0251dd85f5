//! Finite-difference gradient checks of the RL losses (the harness is `pglm_autograd::gradcheck`).
//!
//! The differentiable input is the current `log π` (or the values `V`, or `x`); everything the loss
//! treats as a constant (old and reference log-probs, advantages, returns, masks, weights) is
//! derived from the drawn sample, not from the perturbed input, so the finite differences see the
//! same constants as backward. Log-ratios and value steps come from fixed tables that keep every
//! ratio away from the kinks of the clip (`1 − ε_low`, `1 + ε_high`, `c`) and the value clip.

use ndarray::Array2;
use pglm_autograd::gradcheck::{Case, Sample, array};
use pglm_autograd::{Float, Tape, Var, gradcheck_case};
use proptest::prelude::*;

use super::{
    Aggregation, KlEstimator, PolicyLossConfig, PolicyLossKind, RatioLevel, kl_loss, policy_loss,
    token_weights, value_loss, weighted_sum,
};

/// `log π − log π_old` per token: ρ ∈ {0.61, 0.74, 0.90, 1, 1.11, 1.35, 1.65, 4.48}, none within
/// 0.01 of 0.8, 1.28 or 3; sequence means of up to 4 of them stay at least 0.001 away in log space.
const LOG_RATIOS: [f64; 8] = [-0.5, -0.3, -0.1, 0.0, 0.1, 0.3, 0.5, 1.5];
const ADVANTAGES: [f64; 7] = [-1.5, -0.7, -0.2, 0.0, 0.4, 1.0, 2.0];
const AGGREGATIONS: [Aggregation; 4] = [
    Aggregation::SeqMeanTokenMean,
    Aggregation::TokenMean,
    Aggregation::SeqMeanTokenSum,
    Aggregation::TokenSumNorm,
];
/// `V − V_old`: none within 0.05 of the value clip ±0.2.
const VALUE_STEPS: [f64; 4] = [-0.45, -0.1, 0.05, 0.35];
/// `V − R`: no ties between the plain and the clipped squared errors.
const VALUE_ERRORS: [f64; 4] = [-0.7, -0.25, 0.15, 0.6];

/// One `(n, L)` input with `n ≤ 3, L ≤ 4`, values in `lo..hi`, plus `2 n L + 1` table indices and a
/// mask of `n L` flags.
fn strategy(lo: f64, hi: f64) -> BoxedStrategy<Sample> {
    (1usize..=3, 1usize..=4)
        .prop_flat_map(move |(n, l)| {
            (
                array(vec![n, l], lo, hi),
                prop::collection::vec(0usize..64, 2 * n * l + 1),
                prop::collection::vec(any::<bool>(), n * l),
                any::<u64>(),
            )
        })
        .prop_map(|(x, ints, flags, seed)| Sample { inputs: vec![x], ints, flags, seed_weights: seed })
        .boxed()
}

fn logp_strategy() -> BoxedStrategy<Sample> {
    strategy(-3.0, -0.1)
}

fn value_strategy() -> BoxedStrategy<Sample> {
    strategy(-1.0, 1.0)
}

/// The drawn input's shape and the `k`-th table entry for each token (`block` selects which
/// `n L` run of indices).
struct Drawn<'a> {
    s: &'a Sample,
    n: usize,
    l: usize,
}

impl<'a> Drawn<'a> {
    fn new(s: &'a Sample) -> Self {
        let shape = s.inputs[0].shape();
        Drawn { s, n: shape[0], l: shape[1] }
    }

    /// A per-token constant from `table`, using index block `block` (0 or 1).
    fn per_token(&self, table: &[f64], block: usize) -> Array2<f64> {
        let (n, l) = (self.n, self.l);
        Array2::from_shape_fn((n, l), |(i, t)| table[self.s.ints[block * n * l + i * l + t] % table.len()])
    }

    fn mask(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.n, self.l), |(i, t)| f64::from(u8::from(self.s.flags[i * self.l + t])))
    }

    fn aggregation(&self) -> Aggregation {
        AGGREGATIONS[self.s.ints[2 * self.n * self.l] % AGGREGATIONS.len()]
    }

    /// The drawn input minus a per-token offset: a constant "old" array near the input.
    fn offset_input(&self, offsets: &Array2<f64>) -> Array2<f64> {
        let x = self.s.inputs[0].view().into_dimensionality::<ndarray::Ix2>().expect("2-d input");
        &x - offsets
    }
}

fn cast<F: Float>(a: &Array2<f64>) -> Array2<F> {
    a.mapv(F::of)
}

fn policy<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample, cfg: &PolicyLossConfig) -> Var {
    let d = Drawn::new(s);
    let mask = d.mask();
    let old = d.offset_input(&d.per_token(&LOG_RATIOS, 0));
    let adv = d.per_token(&ADVANTAGES, 1);
    let w = token_weights(d.aggregation(), &mask, 6.0);
    policy_loss(t, xs[0], &cast(&old), &cast(&adv), &cast(&mask), &cast(&w), cfg).loss
}

fn config(kind: PolicyLossKind, ratio_level: RatioLevel, dual_clip: Option<f64>) -> PolicyLossConfig {
    PolicyLossConfig { kind, clip_low: 0.2, clip_high: 0.28, dual_clip, ratio_level }
}

fn vanilla<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    policy(t, xs, s, &config(PolicyLossKind::Vanilla, RatioLevel::Token, None))
}

fn clip_token<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    policy(t, xs, s, &config(PolicyLossKind::Clip, RatioLevel::Token, None))
}

fn clip_token_dual<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    policy(t, xs, s, &config(PolicyLossKind::Clip, RatioLevel::Token, Some(3.0)))
}

fn clip_sequence<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    policy(t, xs, s, &config(PolicyLossKind::Clip, RatioLevel::Sequence, None))
}

fn clip_sequence_dual<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    policy(t, xs, s, &config(PolicyLossKind::Clip, RatioLevel::Sequence, Some(3.0)))
}

fn kl<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample, est: KlEstimator) -> Var {
    let d = Drawn::new(s);
    let reference = d.offset_input(&d.per_token(&[-1.0, -0.4, 0.0, 0.3, 0.8], 0));
    let w = token_weights(d.aggregation(), &d.mask(), 6.0);
    kl_loss(t, xs[0], &cast(&reference), &cast(&w), est)
}

fn kl_k1<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    kl(t, xs, s, KlEstimator::K1)
}

fn kl_k2<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    kl(t, xs, s, KlEstimator::K2)
}

fn kl_k3<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    kl(t, xs, s, KlEstimator::K3)
}

fn value<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample, clip: Option<f64>) -> Var {
    let d = Drawn::new(s);
    let old = d.offset_input(&d.per_token(&VALUE_STEPS, 0));
    let returns = d.offset_input(&d.per_token(&VALUE_ERRORS, 1));
    let w = token_weights(d.aggregation(), &d.mask(), 6.0);
    value_loss(t, xs[0], &cast(&old), &cast(&returns), &cast(&w), clip).0
}

fn value_clipped<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    value(t, xs, s, Some(0.2))
}

fn value_plain<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    value(t, xs, s, None)
}

fn weighted<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    let d = Drawn::new(s);
    let w = d.per_token(&[-1.0, -0.25, 0.0, 0.5, 2.0], 0);
    weighted_sum(t, xs[0], &cast(&w))
}

/// The RL losses' cases, for the crate's tests and `cargo xtask gradcheck`.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        gradcheck_case!("rl policy_loss vanilla", logp_strategy, vanilla),
        gradcheck_case!("rl policy_loss clip token", logp_strategy, clip_token),
        gradcheck_case!("rl policy_loss clip token dual", logp_strategy, clip_token_dual),
        gradcheck_case!("rl policy_loss clip seq (GSPO)", logp_strategy, clip_sequence),
        gradcheck_case!("rl policy_loss clip seq dual", logp_strategy, clip_sequence_dual),
        gradcheck_case!("rl kl_loss k1", logp_strategy, kl_k1),
        gradcheck_case!("rl kl_loss k2", logp_strategy, kl_k2),
        gradcheck_case!("rl kl_loss k3", logp_strategy, kl_k3),
        gradcheck_case!("rl value_loss clipped", value_strategy, value_clipped),
        gradcheck_case!("rl value_loss unclipped", value_strategy, value_plain),
        gradcheck_case!("rl weighted_sum", value_strategy, weighted),
    ]
}
