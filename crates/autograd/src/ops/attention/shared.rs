//! Causal self-attention over positions stored once: the shared prompts of a rollout's groups.
//!
//! A batch whose sequences repeat their predecessor's prefix keeps each such position once, as a
//! row of `qkv` `(R, 3C)` (the model's `SharedRows`). `expand` `(B, T)` names the row of each
//! position and `pick` `(R)` the position `b·T + t` each row's output is read from. The op is
//!
//! ```text
//! out[r] = causal_self_attention(qkv[expand])[pick[r]]        (R, C)
//! ```
//!
//! computed without the `(B, T, 3C)` copy of `qkv[expand]`, the `(B, T, C)` output and the gathers
//! between them: each thread rearranges a sequence's rows straight from `qkv` and writes only the
//! rows that sequence's positions are picked for. The gradient of a row sums over every position
//! that reads it, in the order of the positions, as the gathers' backward did, so the values and
//! the gradients are those of the three-op graph bit for bit.

use ndarray::{Array1, Array2, ArrayD, ArrayView2, IxDyn};
use rayon::prelude::*;

use super::{Op, Unpacked, backward_row, forward_row, slice_of};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// `expand` and `pick` of [`Tape::causal_self_attention_rows`], checked.
pub(crate) struct Layout {
    /// The stored row of each position, `b·T + t`.
    expand: Vec<u32>,
    /// The position each stored row's output is read from, increasing.
    pick: Vec<u32>,
    /// Positions per sequence.
    t: usize,
    /// `first[b]..first[b + 1]` are the rows picked from sequence `b`.
    first: Vec<usize>,
}

impl Layout {
    /// Checks `expand` (B, T) and `pick` against `r` stored rows; panics naming what is wrong.
    fn new(expand: &ArrayD<u32>, pick: &ArrayD<u32>, r: usize) -> Self {
        const OP: &str = "causal_self_attention_rows";
        assert!(expand.ndim() == 2, "{OP}: expand must be (B, T), got shape {:?}", expand.shape());
        let (b_n, t) = (expand.shape()[0], expand.shape()[1]);
        let expand = crate::ops::nn::checked_ids(OP, expand, r, "the stored rows of qkv number");
        let pick: Vec<u32> = pick.iter().copied().collect();
        assert!(pick.len() == r, "{OP}: pick has {} entries for {r} stored rows", pick.len());
        for (i, &p) in pick.iter().enumerate() {
            let ok =
                (p as usize) < b_n * t && expand[p as usize] as usize == i && (i == 0 || pick[i - 1] < p);
            assert!(ok, "{OP}: pick[{i}] = {p} is not an increasing position (< B·T) that holds row {i}");
        }
        let first = (0..=b_n).map(|b| pick.partition_point(|&p| (p as usize) < b * t)).collect();
        Layout { expand, pick, t, first }
    }

    /// Sequence `b`'s rows of `x` (rows `w` wide), position by position.
    fn rows<'a, F>(&'a self, x: &'a [F], w: usize, b: usize) -> impl ExactSizeIterator<Item = &'a [F]> {
        self.expand[b * self.t..(b + 1) * self.t].iter().map(move |&r| &x[r as usize * w..][..w])
    }

    /// Sequence `b`'s rows of the output's gradient `dy` (rows `c` wide): a row's gradient at the
    /// position it is picked from, `zero` at the others.
    fn grad_rows<'a, F>(
        &'a self,
        dy: &'a [F],
        zero: &'a [F],
        b: usize,
    ) -> impl ExactSizeIterator<Item = &'a [F]> {
        let c = zero.len();
        let at = move |(t, &r): (usize, &u32)| {
            let picked = self.pick[r as usize] as usize == b * self.t + t;
            if picked { &dy[r as usize * c..][..c] } else { zero }
        };
        self.expand[b * self.t..(b + 1) * self.t].iter().enumerate().map(at)
    }
}

/// Backward record of [`Tape::causal_self_attention_rows`]; `probs` is P, `(B, H, T, T)`.
pub(crate) struct Rows<F> {
    qkv: Var,
    n_head: usize,
    layout: Layout,
    probs: ArrayD<F>,
}

/// `(R, 3C)` and `hs` of a stored-rows qkv; panics naming the shape.
fn rows_dims(shape: &[usize], n_head: usize) -> (usize, usize, usize) {
    let ok = shape.len() == 2 && n_head > 0 && shape[1] > 0 && shape[1].is_multiple_of(3 * n_head);
    assert!(
        ok,
        "causal_self_attention_rows: qkv {shape:?} is not (R, 3C) with C divisible by n_head = {n_head}"
    );
    (shape[0], shape[1] / 3, shape[1] / 3 / n_head)
}

impl<F: Float> Rows<F> {
    /// `dqkv[r] += Σ` over the positions reading row `r`, in order, of each position's gradient
    /// from its sequence's attention, the sequences computed in parallel. A row read by one
    /// position only (a sequence's own rows: most of them) is picked by that position's
    /// sequence, which adds the gradient into it directly; the positions of rows read several
    /// times (shared prompts) are set aside and added into their rows afterwards, in order.
    pub(crate) fn backward(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let Rows { qkv, n_head, ref layout, ref probs } = *self;
        if !ctx.needs(qkv) {
            return;
        }
        let (r_n, c, hs) = rows_dims(ctx.value(qkv).shape(), n_head);
        let (t, w, pblk) = (layout.t, 3 * c, n_head * layout.t * layout.t);
        let n_b = layout.first.len() - 1;
        let mut reads = vec![0u32; r_n];
        for &r in &layout.expand {
            reads[r as usize] += 1;
        }
        // The rows of the set-aside positions, in order; sequence `b`'s are `starts[b]..starts[b + 1]`.
        let (mut shared, mut starts) = (Vec::new(), vec![0usize]);
        for seq in layout.expand.chunks_exact(t.max(1)) {
            shared.extend(seq.iter().copied().filter(|&r| reads[r as usize] > 1));
            starts.push(shared.len());
        }
        let mut aside = crate::fill::zero_vec::<F>(shared.len() * w);
        // The slot is moved out while the sequences read qkv's value through `ctx`.
        let mut slot = std::mem::take(ctx.slot(qkv));
        if pblk > 0 && w > 0 {
            let x = ctx.value(qkv).as_standard_layout();
            let go = grad_out.as_standard_layout();
            let (xs, gs, zero) = (slice_of(&x), slice_of(&go), vec![F::zero(); c]);
            let dqkv = crate::ops::nn::rows_mut(&mut slot);
            // Each sequence's picked rows of the gradient, and its set-aside positions.
            let (mut own, mut set) = (Vec::with_capacity(n_b), Vec::with_capacity(n_b));
            let (mut rest, mut rest_set) = (&mut dqkv[..], &mut aside[..]);
            for b in 0..n_b {
                let (o, tail) = rest.split_at_mut((layout.first[b + 1] - layout.first[b]) * w);
                let (a, tail_set) = rest_set.split_at_mut((starts[b + 1] - starts[b]) * w);
                (rest, rest_set) = (tail, tail_set);
                own.push(o);
                set.push(a);
            }
            let seqs = own.into_par_iter().zip(set).enumerate();
            seqs.for_each_init(
                || (Unpacked::default(), Vec::new()),
                |(bufs, dx), (b, (own, set))| {
                    dx.resize(t * w, F::zero()); // every value is overwritten
                    let rows = (layout.rows(xs, w, b), layout.grad_rows(gs, &zero, b));
                    backward_row(rows, &slice_of(probs)[b * pblk..][..pblk], (n_head, hs), bufs, dx);
                    let mut set = set.chunks_exact_mut(w);
                    for (&r, d) in layout.expand[b * t..(b + 1) * t].iter().zip(dx.chunks_exact(w)) {
                        if reads[r as usize] > 1 {
                            set.next().expect("a set-aside position").copy_from_slice(d);
                        } else {
                            let at = (r as usize - layout.first[b]) * w;
                            own[at..at + w].iter_mut().zip(d).for_each(|(g, &d)| *g += d);
                        }
                    }
                },
            );
        }
        crate::ops::nn::scatter_add_rows(&shared, &aside, &mut slot);
        *ctx.slot(qkv) = slot;
    }
}

impl<F: Float> Tape<F> {
    /// [`Tape::causal_self_attention`] on a batch whose positions are rows stored once: `qkv` is
    /// `(R, 3C)`, `expand` `(B, T)` gives each position's row and `pick` `(R)` the position
    /// `b·T + t` each row's output is read from. Returns `(R, C)`: the value and the gradient,
    /// bit for bit, of
    ///
    /// ```text
    /// embedding(reshape(causal_self_attention(embedding(qkv, expand), n_head), (B·T, C)), pick)
    /// ```
    ///
    /// without its `(B, T, 3C)` and `(B, T, C)` intermediates. A stored row's output must not
    /// depend on which position holding it is picked, as for the shared prefixes of a batch.
    ///
    /// # Panics
    /// If `qkv` is not `(R, 3C)` with `C` divisible by `n_head`, `expand` is not 2-D with ids
    /// `< R`, or `pick` is not `R` increasing positions `< B·T` each holding its row.
    pub fn causal_self_attention_rows(
        &mut self,
        qkv: Var,
        expand: &ArrayD<u32>,
        pick: &ArrayD<u32>,
        n_head: usize,
    ) -> Var {
        let (r_n, c, hs) = rows_dims(self.shape(qkv), n_head);
        let layout = Layout::new(expand, pick, r_n);
        let (n_b, t) = (layout.first.len() - 1, layout.t);
        let mut probs = crate::fill::zeros::<F>(&[n_b, n_head, t, t]);
        let mut out = crate::fill::zero_vec::<F>(r_n * c);
        {
            let x = self.value(qkv).as_standard_layout();
            let xs = slice_of(&x);
            // Each sequence's picked rows are one run of the output (`pick` increases).
            let mut runs = Vec::with_capacity(n_b);
            let mut rest = &mut out[..];
            for b in 0..n_b {
                let (run, tail) = rest.split_at_mut((layout.first[b + 1] - layout.first[b]) * c);
                runs.push(run);
                rest = tail;
            }
            let pblk = n_head * t * t;
            if pblk > 0 {
                let p = probs.as_slice_mut().expect("fresh");
                let seqs = p.par_chunks_mut(pblk).zip(runs.into_par_iter()).enumerate();
                seqs.for_each_init(Unpacked::default, |bufs, (b, (pb, run))| {
                    let mut o = std::mem::take(&mut bufs.2);
                    o.resize(t * c, F::zero()); // every value is overwritten
                    forward_row(layout.rows(xs, 3 * c, b), pb, (n_head, hs), bufs, &mut o);
                    let picks = &layout.pick[layout.first[b]..layout.first[b + 1]];
                    for (row, &p) in run.chunks_exact_mut(c).zip(picks) {
                        let at = p as usize - b * t;
                        row.copy_from_slice(&o[at * c..(at + 1) * c]);
                    }
                    bufs.2 = o;
                });
            }
        }
        let out = ArrayD::from_shape_vec(IxDyn(&[r_n, c]), out).expect("length matches shape");
        let rows = Rows { qkv, n_head, layout, probs };
        self.push(out, &[qkv], || crate::ops::Op::Attention(Op::CausalSelfAttentionRows(rows)))
    }
}

/// `expand` (B, T) and `pick` of [`Tape::causal_self_attention_rows`] for the token ids `ids`
/// (B, T) when each sequence stores only its positions past the prefix it shares with the
/// sequence before it (a rollout's groups repeat their prompt so). Row `r` holds the `r`-th
/// position stored, in order of `b·T + t`.
///
/// # Panics
/// If `ids` has more than `u32::MAX` positions.
pub fn shared_prefix_layout(ids: ArrayView2<'_, u32>) -> (ArrayD<u32>, ArrayD<u32>) {
    let (b_n, t) = ids.dim();
    let id = |n: usize| u32::try_from(n).expect("a batch of at most u32::MAX positions");
    let (mut expand, mut pick) = (Array2::<u32>::zeros((b_n, t)), Vec::new());
    for b in 0..b_n {
        let shared = if b == 0 {
            0
        } else {
            ids.row(b).iter().zip(ids.row(b - 1)).take_while(|(x, y)| x == y).count()
        };
        for i in 0..t {
            expand[[b, i]] = if i < shared {
                expand[[b - 1, i]]
            } else {
                pick.push(id(b * t + i));
                id(pick.len() - 1)
            };
        }
    }
    (expand.into_dyn(), Array1::from(pick).into_dyn())
}

/// [`shared_prefix_layout`] of sequences given as rows.
#[cfg(any(test, feature = "gradcheck"))]
fn layout_of(ids: &[Vec<u32>]) -> (ArrayD<u32>, ArrayD<u32>) {
    let ids = Array2::from_shape_vec((ids.len(), ids[0].len()), ids.concat()).expect("rows of one length");
    shared_prefix_layout(ids.view())
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array};
    use crate::gradcheck_case;

    /// `ints` = `[B, T, n_head, ids...]`.
    fn rows_op<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        let (b, n, n_head) = (s.ints[0], s.ints[1], s.ints[2]);
        let ids: Vec<Vec<u32>> =
            s.ints[3..].chunks(n).take(b).map(|r| r.iter().map(|&i| i as u32).collect()).collect();
        let (expand, pick) = layout_of(&ids);
        t.causal_self_attention_rows(x[0], &expand, &pick, n_head)
    }
    // Tokens from {0, 1}, so that sequences often share prefixes (and sometimes all of it).
    let strategy = || {
        (1usize..=3, 1usize..=4, 1usize..=2, 1usize..=2)
            .prop_flat_map(|(b, t, n_head, hs)| {
                (prop::collection::vec(prop::collection::vec(0u32..2, t), b), Just((n_head, hs)))
            })
            .prop_flat_map(|(ids, (n_head, hs))| {
                let r = layout_of(&ids).1.len();
                (Just(ids), Just(n_head), array(vec![r, 3 * n_head * hs], -1.5, 1.5), any::<u64>())
            })
            .prop_map(|(ids, n_head, qkv, seed)| {
                let mut ints = vec![ids.len(), ids[0].len(), n_head];
                ints.extend(ids.iter().flatten().map(|&i| i as usize));
                Sample { ints, seed_weights: seed, ..Sample::new(vec![qkv]) }
            })
            .boxed()
    };
    vec![gradcheck_case!("causal_self_attention_rows (shared prefixes)", strategy, rows_op)]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::layout_of;
    use crate::test_util::filled;
    use crate::{Float, Tape};

    /// Sequences of two groups sharing 3- and 1-token prompts, one repeating its predecessor
    /// whole (no row of its own), one alone.
    fn ids() -> Vec<Vec<u32>> {
        let rows: [&[u32]; 6] = [
            &[1, 2, 3, 4, 5],
            &[1, 2, 3, 6, 6],
            &[1, 2, 3, 6, 6],
            &[7, 1, 1, 1, 1],
            &[7, 2, 2, 2, 2],
            &[3; 5],
        ];
        rows.map(|r| r.to_vec()).to_vec()
    }

    /// Output and qkv gradient of the op, and of the gathers and packed attention it replaces.
    fn fused_and_composite<F: Float>(n_head: usize, hs: usize) -> [[ArrayD<F>; 2]; 2] {
        let (expand, pick) = layout_of(&ids());
        let (b, t, r, c) = (expand.shape()[0], expand.shape()[1], pick.len(), n_head * hs);
        let qkv = filled(&[r, 3 * c], 21).mapv(F::of);
        let probe = filled(&[r, c], 22).mapv(F::of);
        let run = |fused: bool| {
            let mut tape = Tape::<F>::new();
            let x = tape.input(qkv.clone());
            let y = if fused {
                tape.causal_self_attention_rows(x, &expand, &pick, n_head)
            } else {
                let full = tape.embedding(x, &expand);
                let a = tape.causal_self_attention(full, n_head);
                let a = tape.reshape(a, &[b * t, c]);
                tape.embedding(a, &pick)
            };
            let value = tape.value(y).clone();
            let g = tape.backward_with(y, probe.clone());
            [value, g.wrt(x).unwrap().clone()]
        };
        [run(true), run(false)]
    }

    #[test]
    fn equals_the_gathers_and_packed_attention_bit_for_bit() {
        let [fused, composite] = fused_and_composite::<f32>(4, 16);
        for (name, a, b) in [("output", &fused[0], &composite[0]), ("gradient", &fused[1], &composite[1])] {
            assert_eq!(a.shape(), b.shape(), "{name}");
            assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
        }
        let [fused, composite] = fused_and_composite::<f64>(3, 5);
        for (a, b) in fused.iter().zip(&composite) {
            assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        // The probe reaches every row: no gradient is left all zero.
        assert!(fused[1].iter().any(|&g| g != 0.0));
    }

    #[test]
    fn bit_identical_with_one_and_two_threads() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| fused_and_composite::<f32>(2, 32)[0].clone())
        };
        let (one, two) = (run(1), run(2));
        for (a, b) in one.iter().zip(&two) {
            assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    #[should_panic(expected = "causal_self_attention_rows: pick[1] = 2 is not an increasing position")]
    fn a_pick_that_does_not_hold_its_row_panics() {
        let mut t = Tape::<f32>::new();
        let qkv = t.input(ArrayD::zeros(IxDyn(&[3, 6])));
        let expand = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0, 1, 2]).unwrap();
        let pick = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0, 2, 1]).unwrap();
        t.causal_self_attention_rows(qkv, &expand, &pick, 1);
    }

    #[test]
    #[should_panic(expected = "causal_self_attention_rows: qkv [3, 7] is not (R, 3C)")]
    fn a_qkv_of_the_wrong_width_panics() {
        let mut t = Tape::<f32>::new();
        let qkv = t.input(ArrayD::zeros(IxDyn(&[3, 7])));
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0, 1, 2]).unwrap();
        t.causal_self_attention_rows(qkv, &ids, &ids.clone().into_shape_with_order(IxDyn(&[3])).unwrap(), 1);
    }
}
