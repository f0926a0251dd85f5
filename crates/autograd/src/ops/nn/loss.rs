//! Fused ops on vocabulary logits `(..., V)`: cross-entropy, token log-probabilities, entropy.
//!
//! Memory-bounded: the forward keeps one `logsumexp` per row (N floats), never an `(N, V)`
//! probability tensor; backward recomputes `p = exp(x - lse)` row by row from the logits (the input
//! node's value) and writes the gradient of the logits in the same pass.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::kernels::{entropy_and_logsumexp, logsumexp};
use super::{checked_ids, into_standard, lead_shape, rows_cols, rows_per_task};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Backward record of [`Tape::cross_entropy`].
pub(crate) struct CrossEntropy<F> {
    logits: Var,
    targets: Vec<u32>,
    /// `m_r / sum m` per row (`1 / N` without a mask; all zero when the mask sums to zero).
    scale: Vec<F>,
    lse: Vec<F>,
}

/// Backward record of [`Tape::token_log_probs`].
pub(crate) struct TokenLogProbs<F> {
    logits: Var,
    ids: Vec<u32>,
    lse: Vec<F>,
}

/// Backward record of [`Tape::entropy`] (the entropies are the node's value).
pub(crate) struct Entropy<F> {
    logits: Var,
    lse: Vec<F>,
}

/// Builds the gradient of the logits row by row: `row_grad(r, x_r, lse_r, g_r)` fills the zeroed
/// row `g_r` from the logits row `x_r`. Rows run in parallel; each row's result is independent.
fn logits_grad<F: Float>(
    ctx: &mut Backward<'_, F>,
    logits: Var,
    lse: &[F],
    row_grad: impl Fn(usize, &[F], F, &mut [F]) + Sync,
) {
    if !ctx.needs(logits) {
        return;
    }
    let x = ctx.value(logits);
    let v = *x.shape().last().expect("logits have a last axis");
    let shape = IxDyn(x.shape());
    let mut g = vec![F::zero(); x.len()];
    {
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        g.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .enumerate()
            .with_min_len(rows_per_task(v))
            .for_each(|(r, (g, x))| row_grad(r, x, lse[r], g));
    }
    ctx.add(logits, ArrayD::from_shape_vec(shape, g).expect("length matches shape"));
}

impl<F: Float> CrossEntropy<F> {
    /// `dlogits_r = (softmax(x_r) - onehot(t_r)) * m_r / sum m * dloss`.
    pub(crate) fn backward(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let dloss = *grad_out.iter().next().expect("the loss has one element");
        logits_grad(ctx, self.logits, &self.lse, |r, x, lse, g| {
            let coef = self.scale[r] * dloss;
            if coef == F::zero() {
                return; // a masked-out row: its gradient stays zero
            }
            for (g, &x) in g.iter_mut().zip(x) {
                *g = (x - lse).exp_fast() * coef;
            }
            g[self.targets[r] as usize] -= coef;
        });
    }
}

impl<F: Float> TokenLogProbs<F> {
    /// `dlogits_r = dy_r * (onehot(id_r) - softmax(x_r))`.
    pub(crate) fn backward(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let dy = into_standard(grad_out);
        let dy = dy.as_slice().expect("standard layout");
        logits_grad(ctx, self.logits, &self.lse, |r, x, lse, g| {
            let d = dy[r];
            for (g, &x) in g.iter_mut().zip(x) {
                *g = -(x - lse).exp_fast() * d;
            }
            g[self.ids[r] as usize] += d;
        });
    }
}

impl<F: Float> Entropy<F> {
    /// With `p = softmax(x)` and `H = -sum_i p_i log p_i`: since `dp_i/dx_j = p_i (delta_ij - p_j)`,
    ///
    /// ```text
    /// dH/dx_j = -sum_i p_i (delta_ij - p_j) (log p_i + 1)
    ///         = -p_j (log p_j + 1) + p_j sum_i p_i (log p_i + 1)
    ///         = -p_j (log p_j + 1) + p_j (1 - H)
    ///         = -p_j (log p_j + H),
    /// ```
    ///
    /// so `dlogits_j = -p_j (log p_j + H) dy`, with `log p_j = x_j - lse`.
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let dy = into_standard(grad_out);
        let dy = dy.as_slice().expect("standard layout");
        let h = out.as_slice().expect("op outputs are standard layout");
        logits_grad(ctx, self.logits, &self.lse, |r, x, lse, g| {
            let (d, h) = (dy[r], h[r]);
            for (g, &x) in g.iter_mut().zip(x) {
                let logp = x - lse;
                *g = -logp.exp_fast() * (logp + h) * d;
            }
        });
    }
}

impl<F: Float> Tape<F> {
    /// `logsumexp` of every row of `logits` (N floats), computed in parallel.
    fn row_logsumexp(&self, logits: Var, n: usize, v: usize) -> Vec<F> {
        let x = self.value(logits).as_standard_layout();
        let mut lse = vec![F::zero(); n];
        x.as_slice()
            .expect("standard layout")
            .par_chunks(v)
            .zip(lse.par_iter_mut())
            .with_min_len(rows_per_task(v))
            .for_each(|(x, l)| *l = logsumexp(x));
        lse
    }

    /// Checks that `ids` has the shape of `logits` without its last axis; returns `(N, V)`.
    fn check_row_ids(&self, op: &str, logits: Var, ids: &ArrayD<u32>, what: &str) -> (usize, usize) {
        let shape = self.shape(logits);
        let (n, v) = rows_cols(op, shape);
        assert!(
            ids.shape() == &shape[..shape.len() - 1],
            "{op}: {what} of shape {:?} do not match logits of shape {shape:?} (expected {:?})",
            ids.shape(),
            &shape[..shape.len() - 1]
        );
        (n, v)
    }

    /// Mean cross-entropy `-log softmax(logits)[target]` over all positions: logits `(..., V)`,
    /// `targets` `(...)`. With a `mask` (shape of `targets`), the mean is weighted:
    /// `sum_r m_r nll_r / sum_r m_r`, so positions with `m_r = 0` contribute nothing. When the mask
    /// sums to zero (or there are no positions) the loss is 0 and its gradient is zero.
    /// Returns a 0-d array (shape `[]`).
    ///
    /// Memory: keeps one logsumexp per row for backward, plus the targets and row weights.
    ///
    /// # Panics
    /// If `targets` or `mask` do not have the shape of `logits` without its last axis, or a target
    /// is `>= V`.
    pub fn cross_entropy(&mut self, logits: Var, targets: &ArrayD<u32>, mask: Option<&ArrayD<F>>) -> Var {
        let (n, v) = self.check_row_ids("cross_entropy", logits, targets, "targets");
        if let Some(m) = mask {
            assert!(
                m.shape() == targets.shape(),
                "cross_entropy: mask of shape {:?} does not match targets of shape {:?}",
                m.shape(),
                targets.shape()
            );
        }
        let targets = checked_ids("cross_entropy", targets, v, "the logits' last axis has");
        let lse = self.row_logsumexp(logits, n, v);
        let weights: Vec<F> = match mask {
            Some(m) => m.iter().copied().collect(),
            None => vec![F::one(); n],
        };
        // nll_r = lse_r - x[r, t_r]; the sums over rows run in row order, in f64.
        let (mut num, mut den) = (0.0f64, 0.0f64);
        {
            let x = self.value(logits).as_standard_layout();
            let x = x.as_slice().expect("standard layout");
            for r in 0..n {
                let nll = lse[r] - x[r * v + targets[r] as usize];
                num += weights[r].to_f64() * nll.to_f64();
                den += weights[r].to_f64();
            }
        }
        let inv_den = if den == 0.0 { 0.0 } else { den.recip() };
        let value = ArrayD::from_elem(IxDyn(&[]), F::of(num * inv_den));
        self.push(value, &[logits], move || {
            let scale = weights.iter().map(|&m| F::of(m.to_f64() * inv_den)).collect();
            crate::ops::Op::Nn(super::Op::CrossEntropy(CrossEntropy { logits, targets, scale, lse }))
        })
    }

    /// `log softmax(logits)[id]` per position, what policy gradients need (`log pi(token)`):
    /// logits `(..., V)`, `ids` `(...)`, result of shape `(...)`. Memory: one logsumexp per row.
    ///
    /// # Panics
    /// If `ids` does not have the shape of `logits` without its last axis, or an id is `>= V`.
    pub fn token_log_probs(&mut self, logits: Var, ids: &ArrayD<u32>) -> Var {
        let (n, v) = self.check_row_ids("token_log_probs", logits, ids, "ids");
        let ids = checked_ids("token_log_probs", ids, v, "the logits' last axis has");
        let lse = self.row_logsumexp(logits, n, v);
        let out: Vec<F> = {
            let x = self.value(logits).as_standard_layout();
            let x = x.as_slice().expect("standard layout");
            (0..n).map(|r| x[r * v + ids[r] as usize] - lse[r]).collect()
        };
        let value = ArrayD::from_shape_vec(lead_shape(self.shape(logits)), out).expect("N rows");
        self.push(value, &[logits], move || {
            crate::ops::Op::Nn(super::Op::TokenLogProbs(TokenLogProbs { logits, ids, lse }))
        })
    }

    /// The entropy `H = -sum_j p_j log p_j` of `p = softmax(logits)` per row: `(..., V) -> (...)`.
    ///
    /// # Panics
    /// If `logits` is 0-d or its last axis is empty.
    pub fn entropy(&mut self, logits: Var) -> Var {
        let (n, v) = rows_cols("entropy", self.shape(logits));
        let (mut h, mut lse) = (vec![F::zero(); n], vec![F::zero(); n]);
        {
            let x = self.value(logits).as_standard_layout();
            x.as_slice()
                .expect("standard layout")
                .par_chunks(v)
                .zip(h.par_iter_mut())
                .zip(lse.par_iter_mut())
                .with_min_len(rows_per_task(v))
                .for_each(|((x, h), l)| (*h, *l) = entropy_and_logsumexp(x));
        }
        let value = ArrayD::from_shape_vec(lead_shape(self.shape(logits)), h).expect("N rows");
        self.push(value, &[logits], move || crate::ops::Op::Nn(super::Op::Entropy(Entropy { logits, lse })))
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use super::ids_from_ints;
    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    /// Logits `(lead..., V)` in -3..3 with one id per row in `ints` and one mask flag per row.
    fn logits_and_ids() -> BoxedStrategy<Sample> {
        (shape(2, 3), 1usize..=5)
            .prop_flat_map(|(lead, v)| {
                let n: usize = lead.iter().product();
                let mut s = lead.clone();
                s.push(v);
                let ids = prop::collection::vec(0..v, n);
                let flags = prop::collection::vec(any::<bool>(), n);
                (array(s, -3.0, 3.0), Just(lead), ids, flags, any::<u64>())
            })
            .prop_map(|(x, lead, ids, flags, seed)| {
                let mut ints = vec![lead.len()];
                ints.extend(&lead);
                ints.extend(ids);
                Sample { ints, flags, seed_weights: seed, ..Sample::new(vec![x]) }
            })
            .boxed()
    }
    fn logits() -> BoxedStrategy<Sample> {
        shape(3, 5)
            .prop_flat_map(|s| (array(s, -3.0, 3.0), any::<u64>()))
            .prop_map(|(x, seed)| Sample { seed_weights: seed, ..Sample::new(vec![x]) })
            .boxed()
    }
    fn ce<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.cross_entropy(x[0], &ids_from_ints(&s.ints), None)
    }
    fn ce_masked<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        let targets = ids_from_ints(&s.ints);
        let mask = ArrayD::from_shape_vec(
            targets.raw_dim(),
            s.flags.iter().map(|&f| F::of(f as u8 as f64)).collect(),
        )
        .expect("one flag per row");
        t.cross_entropy(x[0], &targets, Some(&mask))
    }
    fn tlp<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.token_log_probs(x[0], &ids_from_ints(&s.ints))
    }
    fn entropy<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.entropy(x[0])
    }
    vec![
        gradcheck_case!("cross_entropy", logits_and_ids, ce),
        gradcheck_case!("cross_entropy (mask)", logits_and_ids, ce_masked),
        gradcheck_case!("token_log_probs", logits_and_ids, tlp),
        gradcheck_case!("entropy", logits, entropy),
    ]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, Axis, array};

    use crate::Tape;

    /// Deterministic logits in (-3, 3).
    fn wave(shape: &[usize], k: f64) -> ArrayD<f64> {
        let mut i = 0.0;
        ArrayD::from_shape_fn(shape, |_| {
            i += 1.0;
            (i * k).sin() * 3.0
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cross_entropy_on_hand_computed_values() {
        // Row 0: p = (1/2, 1/2), target 0: nll = ln 2. Row 1: p = (1/4, 3/4), target 1: nll = ln 4/3.
        let mut t = Tape::<f64>::new();
        let x = t.input(array![[0.0, 0.0], [0.0, 3f64.ln()]].into_dyn());
        let loss = t.cross_entropy(x, &array![0u32, 1].into_dyn(), None);
        assert_eq!(t.shape(loss), &[] as &[usize]);
        assert!(close(t.value(loss)[[]], (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0));
        // d/dx = (p - onehot) / N.
        let g = t.backward(loss);
        let expect = [-0.25, 0.25, 0.125, -0.125];
        for (a, b) in g.wrt(x).unwrap().iter().zip(expect) {
            assert!(close(*a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn masked_cross_entropy_ignores_masked_positions() {
        let logits = wave(&[3, 4], 0.7);
        let (targets, mask) = (array![1u32, 3, 2].into_dyn(), array![1.0, 0.0, 1.0].into_dyn());
        let mut t = Tape::<f64>::new();
        let x = t.input(logits.clone());
        let loss = t.cross_entropy(x, &targets, Some(&mask));
        let g = t.backward(loss);
        // Scrambling the masked row changes nothing.
        let mut scrambled = logits.clone();
        scrambled.index_axis_mut(Axis(0), 1).fill(1e4);
        let x2 = t.input(scrambled);
        let loss2 = t.cross_entropy(x2, &targets, Some(&mask));
        assert_eq!(t.value(loss)[[]], t.value(loss2)[[]]);
        assert!(g.wrt(x).unwrap().index_axis(Axis(0), 1).iter().all(|&v| v == 0.0));
        // It is the plain mean over the kept rows.
        let kept = ndarray::stack![Axis(0), logits.index_axis(Axis(0), 0), logits.index_axis(Axis(0), 2)];
        let x3 = t.input(kept);
        let loss3 = t.cross_entropy(x3, &array![1u32, 2].into_dyn(), None);
        assert!(close(t.value(loss)[[]], t.value(loss3)[[]]));
    }

    #[test]
    fn a_mask_summing_to_zero_gives_zero_loss_and_gradient() {
        let mut t = Tape::<f32>::new();
        let x = t.input(wave(&[2, 3], 0.3).mapv(|v| v as f32));
        let loss = t.cross_entropy(x, &array![0u32, 2].into_dyn(), Some(&array![0.0f32, 0.0].into_dyn()));
        assert_eq!(t.value(loss)[[]], 0.0);
        let g = t.backward(loss);
        assert!(g.wrt(x).unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn token_log_probs_equal_log_softmax_gathered() {
        let logits = wave(&[2, 3, 5], 1.3);
        let ids = array![[4u32, 0, 2], [1, 1, 3]].into_dyn();
        let mut t = Tape::<f64>::new();
        let x = t.input(logits);
        let lp = t.token_log_probs(x, &ids);
        let ls = t.log_softmax(x);
        assert_eq!(t.shape(lp), &[2, 3]);
        for ((b, s), &id) in ndarray::indices((2, 3)).into_iter().zip(ids.iter()) {
            assert!(close(t.value(lp)[[b, s]], t.value(ls)[[b, s, id as usize]]));
        }
        // The loss is the mean of the negated token log-probabilities.
        let loss = t.cross_entropy(x, &ids, None);
        assert!(close(t.value(loss)[[]], -t.value(lp).mean().unwrap()));
    }

    #[test]
    fn entropy_matches_its_definition() {
        let logits = wave(&[4, 6], 0.9);
        let mut t = Tape::<f64>::new();
        let x = t.input(logits);
        let h = t.entropy(x);
        let (p, logp) = (t.softmax(x), t.log_softmax(x));
        let direct = -(t.value(p) * t.value(logp)).sum_axis(Axis(1));
        for (a, b) in t.value(h).iter().zip(direct.iter()) {
            assert!(close(*a, *b));
        }
        let u = t.input(ArrayD::from_elem(vec![7], 2.5));
        let hu = t.entropy(u);
        assert!(close(t.value(hu)[[]], 7f64.ln()));
    }

    /// Values and gradients do not depend on the thread count.
    #[test]
    fn losses_are_bit_identical_whatever_the_thread_count() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let logits = wave(&[96, 700], 0.37).mapv(|v| v as f32);
                let targets = ArrayD::from_shape_fn(vec![96], |i| (i[0] * 37 % 700) as u32);
                let mask = ArrayD::from_shape_fn(vec![96], |i| (i[0] % 3) as f32);
                let mut t = Tape::<f32>::new();
                let x = t.input(logits);
                let loss = t.cross_entropy(x, &targets, Some(&mask));
                let lp = t.token_log_probs(x, &targets);
                let h = t.entropy(x);
                let sum_lp = t.value(lp).sum() + t.value(h).sum();
                (t.value(loss).clone(), sum_lp, t.backward(loss).wrt(x).unwrap().clone())
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[should_panic(
        expected = "cross_entropy: id 9 at flat position 1 is out of range: the logits' last axis has V = 4"
    )]
    fn cross_entropy_target_out_of_range_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::zeros(vec![2, 4]));
        t.cross_entropy(x, &array![0u32, 9].into_dyn(), None);
    }

    #[test]
    #[should_panic(expected = "token_log_probs: ids of shape [3] do not match logits of shape [2, 4]")]
    fn ids_of_the_wrong_shape_panic_naming_both_shapes() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::zeros(vec![2, 4]));
        t.token_log_probs(x, &array![0u32, 1, 2].into_dyn());
    }
}
