//! Fused scaled-dot-product attention (llm.c style): one node for softmax(q·kᵀ/√D)·v, keeping the
//! probabilities P for a hand-written backward.
//!
//! Per head, with S = q·kᵀ/√D (future positions masked when causal), P = softmax(S) over each row,
//! O = P·v. Backward, from dO:
//!
//! ```text
//! dV = Pᵀ·dO        dP = dO·vᵀ        dS = P ⊙ (dP − rowsum(dP ⊙ P))
//! dQ = dS·k / √D    dK = dSᵀ·q / √D
//! ```
//!
//! Masked probabilities are exactly zero, so their dS is zero and backward needs no mask.
//! Heads are independent: the forward and backward loops run in parallel over (batch, head) pairs,
//! with single-threaded GEMMs inside (one level of threading; each head's result does not depend
//! on which thread computed it).

use ndarray::{Array2, ArrayD, ArrayView2, ArrayView4, ArrayViewMut2, Axis, Ix3, Ix4, s};
use rayon::prelude::*;

use crate::ops::linalg::gemm_serial;
use crate::ops::nn::kernels::{dot, softmax_row_in_place};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// The backward records of this module's ops.
pub(crate) enum Op<F> {
    /// [`Tape::attention`]; `probs` is P, `(B, H, T, T)`.
    Attention { q: Var, k: Var, v: Var, causal: bool, probs: ArrayD<F> },
    /// [`Tape::causal_self_attention`]; `probs` is P, `(B, H, T, T)`.
    CausalSelfAttention { qkv: Var, n_head: usize, probs: ArrayD<F> },
}

/// Query rows per block of the causal loops: the rows `r0..r1` of a block attend only to keys
/// `0..r1`, so each block's products stop at its last row and the masked upper triangle is
/// (mostly) never computed: at T = 256 the products do 36/64 of the full T×T work.
const CAUSAL_BLOCK: usize = 32;

/// The row blocks of one head: `(r0, r1, cols)` with `cols` the keys the rows `r0..r1` can see.
fn row_blocks(t: usize, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> {
    let block = if causal { CAUSAL_BLOCK } else { t.max(1) };
    (0..t).step_by(block).map(move |r0| {
        let r1 = (r0 + block).min(t);
        (r0, r1, if causal { r1 } else { t })
    })
}

/// One head's forward: P = softmax(scale q·kᵀ) (rows masked after the diagonal when `causal`), O = P·v.
/// `p` (T, T) and `o` (T, D) are overwritten.
fn head_forward<F: Float>(
    q: ArrayView2<'_, F>,
    k: ArrayView2<'_, F>,
    v: ArrayView2<'_, F>,
    scale: F,
    causal: bool,
    mut p: ArrayViewMut2<'_, F>,
    mut o: ArrayViewMut2<'_, F>,
) {
    let t = q.nrows();
    for (r0, r1, cols) in row_blocks(t, causal) {
        // S = scale q·kᵀ on the block's rows and visible keys, then softmax in place, row by row.
        let mut pb = p.slice_mut(s![r0..r1, ..]);
        pb.slice_mut(s![.., cols..]).fill(F::zero());
        let mut pb = pb.slice_move(s![.., ..cols]);
        gemm_serial(scale, q.slice(s![r0..r1, ..]), k.slice(s![..cols, ..]).t(), F::zero(), pb.view_mut());
        for (i, mut row) in pb.rows_mut().into_iter().enumerate() {
            let row = row.as_slice_mut().expect("probability rows are contiguous");
            let live = if causal { r0 + i + 1 } else { cols };
            let (live, future) = row.split_at_mut(live);
            softmax_row_in_place(live);
            future.fill(F::zero());
        }
        // O = P·v
        gemm_serial(F::one(), pb.view(), v.slice(s![..cols, ..]), F::zero(), o.slice_mut(s![r0..r1, ..]));
    }
}

/// The gradient views of one head: `dq`, `dk`, `dv`, each `(T, D)`, accumulated into (`+=`).
type HeadGrads<'a, F> = (ArrayViewMut2<'a, F>, ArrayViewMut2<'a, F>, ArrayViewMut2<'a, F>);

/// One head's backward (equations in the module docs), block of query rows by block, each block
/// reading only the keys it saw (P is zero beyond them). `ds` is (T, T) scratch.
#[allow(clippy::too_many_arguments)]
fn head_backward<F: Float>(
    q: ArrayView2<'_, F>,
    k: ArrayView2<'_, F>,
    v: ArrayView2<'_, F>,
    p: ArrayView2<'_, F>,
    d_o: ArrayView2<'_, F>,
    scale: F,
    causal: bool,
    ds: &mut Array2<F>,
    (mut dq, mut dk, mut dv): HeadGrads<'_, F>,
) {
    for (r0, r1, cols) in row_blocks(q.nrows(), causal) {
        let pb = p.slice(s![r0..r1, ..cols]);
        let dob = d_o.slice(s![r0..r1, ..]);
        // dV += Pᵀ·dO
        gemm_serial(F::one(), pb.t(), dob, F::one(), dv.slice_mut(s![..cols, ..]));
        // dP = dO·vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place.
        let mut dsb = ds.slice_mut(s![..r1 - r0, ..cols]);
        gemm_serial(F::one(), dob, v.slice(s![..cols, ..]).t(), F::zero(), dsb.view_mut());
        for (p_row, mut ds_row) in pb.rows().into_iter().zip(dsb.rows_mut()) {
            let p_row = p_row.to_slice().expect("probability rows are contiguous");
            let ds_row = ds_row.as_slice_mut().expect("scratch rows are contiguous");
            let d = dot(p_row, ds_row);
            for (ds, &p) in ds_row.iter_mut().zip(p_row) {
                *ds = p * (*ds - d);
            }
        }
        // dQ += scale dS·k, dK += scale dSᵀ·q
        gemm_serial(scale, dsb.view(), k.slice(s![..cols, ..]), F::one(), dq.slice_mut(s![r0..r1, ..]));
        gemm_serial(scale, dsb.t(), q.slice(s![r0..r1, ..]), F::one(), dk.slice_mut(s![..cols, ..]));
    }
}

/// The `(B, H, T, D)` view of an attention operand; panics naming the shapes if q, k, v differ.
fn heads4<'a, F: Float>(tape: &'a Tape<F>, q: Var, k: Var, v: Var) -> [ArrayView4<'a, F>; 3] {
    let (qs, ks, vs) = (tape.shape(q), tape.shape(k), tape.shape(v));
    assert!(
        qs.len() == 4 && qs == ks && qs == vs,
        "attention: q {qs:?}, k {ks:?} and v {vs:?} must all be (B, H, T, D)"
    );
    [q, k, v].map(|x| tape.value(x).view().into_dimensionality::<Ix4>().expect("4-D"))
}

/// Head `h` of batch row `b` of a `(B, H, T, D)` view.
fn head_of<'a, F>(x: &ArrayView4<'a, F>, b: usize, h: usize) -> ArrayView2<'a, F> {
    (*x).slice_move(s![b, h, .., ..])
}

/// The views of head `h` of batch row `b` in a packed `(B, T, 3C)` qkv: `[q, k, v]`, each `(T, hs)`.
fn packed_head<'a, F>(
    qkv: &ndarray::ArrayView3<'a, F>,
    b: usize,
    h: usize,
    c: usize,
    hs: usize,
) -> [ArrayView2<'a, F>; 3] {
    [0, c, 2 * c].map(|off| qkv.slice_move(s![b, .., off + h * hs..off + (h + 1) * hs]))
}

/// Checks a packed qkv shape and returns `(B, T, C, hs)`.
fn packed_dims(shape: &[usize], n_head: usize) -> (usize, usize, usize, usize) {
    let ok = shape.len() == 3 && n_head > 0 && shape[2].is_multiple_of(3 * n_head) && shape[2] > 0;
    assert!(
        ok,
        "causal_self_attention: qkv {shape:?} is not (B, T, 3C) with C divisible by n_head = {n_head}"
    );
    let c = shape[2] / 3;
    (shape[0], shape[1], c, c / n_head)
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, _out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match self {
            Op::Attention { q, k, v, causal, probs } => {
                let (q, k, v, causal) = (*q, *k, *v, *causal);
                let shape = ctx.value(q).shape().to_vec();
                let (n_b, n_h, t, d) = (shape[0], shape[1], shape[2], shape[3]);
                let scale = F::of(1.0 / (d as f64).sqrt());
                // Fresh gradients (not the slots): q, k and v may be the same node.
                let mut grads = [(); 3].map(|_| crate::fill::zeros::<F>(&shape));
                {
                    let [qv, kv, vv] =
                        [q, k, v].map(|x| ctx.value(x).view().into_dimensionality::<Ix4>().unwrap());
                    let go = grad_out.view().into_dimensionality::<Ix4>().expect("4-D gradient");
                    let p = probs.view().into_dimensionality::<Ix4>().expect("4-D probabilities");
                    let [dq, dk, dv] = grads.each_mut().map(|g| {
                        g.view_mut()
                            .into_shape_with_order((n_b * n_h, t, d))
                            .expect("fresh gradient")
                            .into_outer_iter_mut()
                    });
                    let heads: Vec<_> = dq.zip(dk).zip(dv).map(|((dq, dk), dv)| (dq, dk, dv)).collect();
                    heads.into_par_iter().enumerate().for_each_init(
                        || Array2::zeros((t, t)),
                        |ds, (i, grads)| {
                            let (b, h) = (i / n_h, i % n_h);
                            let [q, k, v, p, d_o] = [&qv, &kv, &vv, &p, &go].map(|x| head_of(x, b, h));
                            head_backward(q, k, v, p, d_o, scale, causal, ds, grads);
                        },
                    );
                }
                let [dq, dk, dv] = grads;
                ctx.add(q, dq);
                ctx.add(k, dk);
                ctx.add(v, dv);
            }
            Op::CausalSelfAttention { qkv, n_head, probs } => {
                let (qkv, n_head) = (*qkv, *n_head);
                let (n_b, t, c, hs) = packed_dims(ctx.value(qkv).shape(), n_head);
                let scale = F::of(1.0 / (hs as f64).sqrt());
                let mut dqkv = crate::fill::zeros::<F>(ctx.value(qkv).shape());
                {
                    let x = ctx.value(qkv).view().into_dimensionality::<Ix3>().expect("3-D qkv");
                    let go = grad_out.view().into_dimensionality::<Ix3>().expect("3-D gradient");
                    let p = probs.view().into_dimensionality::<Ix4>().expect("4-D probabilities");
                    let mut heads = Vec::with_capacity(n_b * n_head);
                    for row in
                        dqkv.view_mut().into_dimensionality::<Ix3>().expect("3-D").into_outer_iter_mut()
                    {
                        // Column blocks of one batch row: q heads, then k heads, then v heads.
                        let mut blocks: Vec<Option<_>> =
                            row.into_axis_chunks_iter_mut(Axis(1), hs).map(Some).collect();
                        for h in 0..n_head {
                            let mut take = |i: usize| blocks[i].take().expect("each block once");
                            heads.push((take(h), take(n_head + h), take(2 * n_head + h)));
                        }
                    }
                    heads.into_par_iter().enumerate().for_each_init(
                        || Array2::zeros((t, t)),
                        |ds, (i, grads)| {
                            let (b, h) = (i / n_head, i % n_head);
                            let [q, k, v] = packed_head(&x, b, h, c, hs);
                            let d_o = go.slice(s![b, .., h * hs..(h + 1) * hs]);
                            head_backward(q, k, v, p.slice(s![b, h, .., ..]), d_o, scale, true, ds, grads);
                        },
                    );
                }
                ctx.add(qkv, dqkv);
            }
        }
    }
}

impl<F: Float> Tape<F> {
    /// Scaled dot-product attention `softmax(q·kᵀ/√D)·v` per (batch, head), in one node.
    ///
    /// `q`, `k`, `v` are `(B, H, T, D)`; so is the result. With `causal`, position `t` attends only
    /// to positions `≤ t` (the other probabilities are exactly zero).
    ///
    /// # Panics
    /// If the three shapes differ or are not 4-D.
    pub fn attention(&mut self, q: Var, k: Var, v: Var, causal: bool) -> Var {
        let [qv, kv, vv] = heads4(self, q, k, v);
        let (n_b, n_h, t, d) = qv.dim();
        let scale = F::of(1.0 / (d as f64).sqrt());
        let mut probs = crate::fill::zeros::<F>(&[n_b, n_h, t, t]);
        let mut out = crate::fill::zeros::<F>(&[n_b, n_h, t, d]);
        {
            let p = probs
                .view_mut()
                .into_shape_with_order((n_b * n_h, t, t))
                .expect("fresh")
                .into_outer_iter_mut();
            let o =
                out.view_mut().into_shape_with_order((n_b * n_h, t, d)).expect("fresh").into_outer_iter_mut();
            let heads: Vec<_> = p.zip(o).collect();
            heads.into_par_iter().enumerate().for_each(|(i, (p, o))| {
                let (b, h) = (i / n_h, i % n_h);
                let [q, k, v] = [&qv, &kv, &vv].map(|x| head_of(x, b, h));
                head_forward(q, k, v, scale, causal, p, o);
            });
        }
        self.push(out, &[q, k, v], || crate::ops::Op::Attention(Op::Attention { q, k, v, causal, probs }))
    }

    /// Causal self-attention on GPT-2's packed projection: `qkv` is `(B, T, 3C)` laid out as
    /// `[q | k | v]`, each `C` wide with the `n_head` heads side by side (`hs = C / n_head` columns
    /// each); the result is `(B, T, C)` with the heads merged the same way. Scale `1/√hs`.
    ///
    /// Reads the heads in place through strided views, so the model needs no split or permute copies.
    ///
    /// # Panics
    /// If `qkv` is not `(B, T, 3C)` with `C` divisible by `n_head`.
    pub fn causal_self_attention(&mut self, qkv: Var, n_head: usize) -> Var {
        let (n_b, t, c, hs) = packed_dims(self.shape(qkv), n_head);
        let scale = F::of(1.0 / (hs as f64).sqrt());
        let x = self.value(qkv).view().into_dimensionality::<Ix3>().expect("3-D qkv");
        let mut probs = crate::fill::zeros::<F>(&[n_b, n_head, t, t]);
        let mut out = crate::fill::zeros::<F>(&[n_b, t, c]);
        {
            let p = probs
                .view_mut()
                .into_shape_with_order((n_b * n_head, t, t))
                .expect("fresh")
                .into_outer_iter_mut();
            let o = out.view_mut().into_dimensionality::<Ix3>().expect("3-D").into_outer_iter_mut();
            let o = o.flat_map(|row| row.into_axis_chunks_iter_mut(Axis(1), hs));
            let heads: Vec<_> = p.zip(o).collect();
            heads.into_par_iter().enumerate().for_each(|(i, (p, o))| {
                let (b, h) = (i / n_head, i % n_head);
                let [q, k, v] = packed_head(&x, b, h, c, hs);
                head_forward(q, k, v, scale, true, p, o);
            });
        }
        self.push(out, &[qkv], || crate::ops::Op::Attention(Op::CausalSelfAttention { qkv, n_head, probs }))
    }
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array};
    use crate::gradcheck_case;

    fn attention<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.attention(x[0], x[1], x[2], s.flags[0])
    }
    fn causal_self_attention<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.causal_self_attention(x[0], s.ints[0])
    }
    vec![
        gradcheck_case!(
            "attention (causal or not)",
            || (1usize..=2, 1usize..=2, 1usize..=5, 1usize..=4, any::<bool>())
                .prop_flat_map(|(b, h, t, d, causal)| {
                    let x = || array(vec![b, h, t, d], -1.5, 1.5);
                    (x(), x(), x(), Just(causal), any::<u64>())
                })
                .prop_map(|(q, k, v, causal, seed)| Sample {
                    flags: vec![causal],
                    seed_weights: seed,
                    ..Sample::new(vec![q, k, v])
                })
                .boxed(),
            attention
        ),
        gradcheck_case!(
            "causal_self_attention",
            || (1usize..=2, 1usize..=5, 1usize..=2, 1usize..=3)
                .prop_flat_map(|(b, t, n_head, hs)| {
                    (array(vec![b, t, 3 * n_head * hs], -1.5, 1.5), Just(n_head), any::<u64>())
                })
                .prop_map(|(qkv, n_head, seed)| Sample {
                    ints: vec![n_head],
                    seed_weights: seed,
                    ..Sample::new(vec![qkv])
                })
                .boxed(),
            causal_self_attention
        ),
    ]
}
