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
//! The loops run in parallel over batch rows (a task owns its row of the output and of the
//! gradient, every head of it); each head runs the register-tiled kernels of `head` on one thread,
//! so its result does not depend on which thread computed it. The ops on GPT-2's packed qkv first
//! rearrange a batch row's heads into contiguous rows (`head::unpack`); `shared` runs the same
//! per-row work on positions stored once (the shared prompts of an RL update).

use ndarray::ArrayD;
use rayon::prelude::*;

use crate::tape::Backward;
use crate::{Float, Tape, Var};

pub use shared::shared_prefix_layout;

/// The backward records of this module's ops.
pub(crate) enum Op<F> {
    /// [`Tape::attention`]; `probs` is P, `(B, H, T, T)`.
    Attention { q: Var, k: Var, v: Var, causal: bool, probs: ArrayD<F> },
    /// [`Tape::causal_self_attention`]; `probs` is P, `(B, H, T, T)`.
    CausalSelfAttention { qkv: Var, n_head: usize, probs: ArrayD<F> },
    /// [`Tape::causal_self_attention_rows`].
    CausalSelfAttentionRows(shared::Rows<F>),
}

/// Panics naming the shapes unless q, k and v are all the same `(B, H, T, D)`.
fn check_shapes<F: Float>(tape: &Tape<F>, q: Var, k: Var, v: Var) {
    let (qs, ks, vs) = (tape.shape(q), tape.shape(k), tape.shape(v));
    assert!(
        qs.len() == 4 && qs == ks && qs == vs,
        "attention: q {qs:?}, k {ks:?} and v {vs:?} must all be (B, H, T, D)"
    );
}

/// The values of an array in standard layout.
fn slice_of<F, S: ndarray::Data<Elem = F>>(x: &ndarray::ArrayBase<S, ndarray::IxDyn>) -> &[F] {
    x.as_slice().expect("standard layout")
}

/// Where block `g` (head `h` of q, k or v is block `h`, `H + h` or `2H + h`) sits in a batch
/// row rearranged by [`head::unpack`]: `T x hs` contiguous rows.
fn unpacked_at(g: usize, t: usize, hs: usize) -> head::At {
    head::At { off: g * t * hs, ld: hs }
}

/// A thread's buffers for the packed ops: the heads' scratch, and one batch row of qkv, of the
/// output's gradient and of qkv's gradient, each rearranged head by head.
type Unpacked<F> = (head::Scratch<F>, Vec<F>, Vec<F>, Vec<F>);

/// One batch row of causal self-attention: `rows` are its `T` packed qkv rows (`3C` wide, see
/// [`Tape::causal_self_attention`]); writes P `(H, T, T)` into `p` and the output `(T, C)` into `o`.
fn forward_row<'a, F: Float>(
    rows: impl ExactSizeIterator<Item = &'a [F]>,
    p: &mut [F],
    (n_head, hs): (usize, usize),
    (sc, xh, _, _): &mut Unpacked<F>,
    o: &mut [F],
) {
    let t = rows.len();
    let (c, dims, scale) =
        (n_head * hs, head::Dims { t, d: hs, causal: true }, F::of(1.0 / (hs as f64).sqrt()));
    head::unpack(rows, (3 * n_head, hs), xh);
    for h in 0..n_head {
        let p = &mut p[h * t * t..(h + 1) * t * t];
        let o = (&mut *o, head::At { off: h * hs, ld: c });
        let operands = [0, n_head, 2 * n_head].map(|g| (&xh[..], unpacked_at(g + h, t, hs)));
        head::forward(operands, dims, scale, p, o, sc);
    }
}

/// The backward of [`forward_row`]: `rows` pairs the batch row's qkv rows with its output's
/// gradient rows (`C` wide); `p` is the row's P; writes the qkv gradient `(T, 3C)` into `dx`.
fn backward_row<'a, 'b, F: Float>(
    (rows, d_o): (impl ExactSizeIterator<Item = &'a [F]>, impl ExactSizeIterator<Item = &'b [F]>),
    p: &[F],
    (n_head, hs): (usize, usize),
    (sc, xh, gh, dh): &mut Unpacked<F>,
    dx: &mut [F],
) {
    let t = rows.len();
    let (dims, scale) = (head::Dims { t, d: hs, causal: true }, F::of(1.0 / (hs as f64).sqrt()));
    head::unpack(rows, (3 * n_head, hs), xh);
    head::unpack(d_o, (n_head, hs), gh);
    // The heads overwrite every value: only a new length needs the fill.
    dh.resize(t * 3 * n_head * hs, F::zero());
    let mut bufs = [&mut dh[..]];
    for h in 0..n_head {
        let p = &p[h * t * t..(h + 1) * t * t];
        let d_o = (&gh[..], unpacked_at(h, t, hs));
        let blocks = [0, n_head, 2 * n_head].map(|g| unpacked_at(g + h, t, hs));
        let operands = blocks.map(|at| (&xh[..], at));
        let grads_at = blocks.map(|at| (0, at));
        head::backward(operands, p, d_o, dims, scale, &mut bufs, grads_at, sc);
    }
    head::pack(dh, (t, 3 * n_head, hs), dx);
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
                let (n_h, t, d) = (shape[1], shape[2], shape[3]);
                let scale = F::of(1.0 / (d as f64).sqrt());
                // Fresh gradients (not the slots): q, k and v may be the same node.
                let mut grads = [(); 3].map(|_| crate::fill::zeros::<F>(&shape));
                {
                    let [qs, ks, vs] = [q, k, v].map(|x| ctx.value(x).as_standard_layout());
                    let go = grad_out.as_standard_layout();
                    let dims = head::Dims { t, d, causal };
                    let [dq, dk, dv] = grads.each_mut().map(|g| g.as_slice_mut().expect("fresh gradient"));
                    let (blk, pblk) = (n_h * t * d, n_h * t * t);
                    if blk > 0 {
                        let rows =
                            dq.par_chunks_mut(blk).zip(dk.par_chunks_mut(blk)).zip(dv.par_chunks_mut(blk));
                        rows.enumerate().for_each_init(head::Scratch::default, |sc, (b, ((dq, dk), dv))| {
                            let [qb, kb, vb, gb] =
                                [&qs, &ks, &vs, &go].map(|x| &slice_of(x)[b * blk..(b + 1) * blk]);
                            let pb = &slice_of(probs)[b * pblk..(b + 1) * pblk];
                            let mut bufs = [dq, dk, dv];
                            for h in 0..n_h {
                                let at = head::At { off: h * t * d, ld: d };
                                let p = &pb[h * t * t..(h + 1) * t * t];
                                let operands = [(qb, at), (kb, at), (vb, at)];
                                let grads_at = [(0, at), (1, at), (2, at)];
                                head::backward(operands, p, (gb, at), dims, scale, &mut bufs, grads_at, sc);
                            }
                        });
                    }
                }
                let [dq, dk, dv] = grads;
                ctx.add(q, dq);
                ctx.add(k, dk);
                ctx.add(v, dv);
            }
            Op::CausalSelfAttention { qkv, n_head, probs } => {
                let (qkv, n_head) = (*qkv, *n_head);
                let (_, t, c, hs) = packed_dims(ctx.value(qkv).shape(), n_head);
                let mut dqkv = crate::fill::zeros::<F>(ctx.value(qkv).shape());
                {
                    let x = ctx.value(qkv).as_standard_layout();
                    let go = grad_out.as_standard_layout();
                    let (xblk, oblk, pblk) = (t * 3 * c, t * c, n_head * t * t);
                    let dx = dqkv.as_slice_mut().expect("fresh gradient");
                    if xblk > 0 {
                        dx.par_chunks_mut(xblk).enumerate().for_each_init(
                            Unpacked::default,
                            |bufs, (b, dx)| {
                                let (xb, gb) =
                                    (&slice_of(&x)[b * xblk..][..xblk], &slice_of(&go)[b * oblk..][..oblk]);
                                let rows = (xb.chunks_exact(3 * c), gb.chunks_exact(c));
                                let pb = &slice_of(probs)[b * pblk..(b + 1) * pblk];
                                backward_row(rows, pb, (n_head, hs), bufs, dx);
                            },
                        );
                    }
                }
                ctx.add(qkv, dqkv);
            }
            Op::CausalSelfAttentionRows(rows) => rows.backward(grad_out, ctx),
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
        check_shapes(self, q, k, v);
        let shape = self.shape(q).to_vec();
        let (n_b, n_h, t, d) = (shape[0], shape[1], shape[2], shape[3]);
        let scale = F::of(1.0 / (d as f64).sqrt());
        let mut probs = crate::fill::zeros::<F>(&[n_b, n_h, t, t]);
        let mut out = crate::fill::zeros::<F>(&shape);
        {
            let [qs, ks, vs] = [q, k, v].map(|x| self.value(x).as_standard_layout());
            let dims = head::Dims { t, d, causal };
            let (blk, pblk) = (n_h * t * d, n_h * t * t);
            let p = probs.as_slice_mut().expect("fresh");
            let o = out.as_slice_mut().expect("fresh");
            if blk > 0 {
                let rows = p.par_chunks_mut(pblk).zip(o.par_chunks_mut(blk));
                rows.enumerate().for_each_init(head::Scratch::default, |sc, (b, (pb, ob))| {
                    let [qb, kb, vb] = [&qs, &ks, &vs].map(|x| &slice_of(x)[b * blk..(b + 1) * blk]);
                    for h in 0..n_h {
                        let at = head::At { off: h * t * d, ld: d };
                        let p = &mut pb[h * t * t..(h + 1) * t * t];
                        head::forward([(qb, at), (kb, at), (vb, at)], dims, scale, p, (&mut *ob, at), sc);
                    }
                });
            }
        }
        self.push(out, &[q, k, v], || crate::ops::Op::Attention(Op::Attention { q, k, v, causal, probs }))
    }

    /// Causal self-attention on GPT-2's packed projection: `qkv` is `(B, T, 3C)` laid out as
    /// `[q | k | v]`, each `C` wide with the `n_head` heads side by side (`hs = C / n_head` columns
    /// each); the result is `(B, T, C)` with the heads merged the same way. Scale `1/√hs`.
    ///
    /// Each thread rearranges a batch row's heads into contiguous rows, so the model needs no split
    /// or permute copies.
    ///
    /// # Panics
    /// If `qkv` is not `(B, T, 3C)` with `C` divisible by `n_head`.
    pub fn causal_self_attention(&mut self, qkv: Var, n_head: usize) -> Var {
        let (n_b, t, c, hs) = packed_dims(self.shape(qkv), n_head);
        let mut probs = crate::fill::zeros::<F>(&[n_b, n_head, t, t]);
        let mut out = crate::fill::zeros::<F>(&[n_b, t, c]);
        {
            let x = self.value(qkv).as_standard_layout();
            let (xblk, oblk, pblk) = (t * 3 * c, t * c, n_head * t * t);
            let p = probs.as_slice_mut().expect("fresh");
            let o = out.as_slice_mut().expect("fresh");
            if oblk > 0 {
                let rows = p.par_chunks_mut(pblk).zip(o.par_chunks_mut(oblk));
                rows.enumerate().for_each_init(Unpacked::default, |bufs, (b, (pb, ob))| {
                    let xb = slice_of(&x)[b * xblk..(b + 1) * xblk].chunks_exact(3 * c);
                    forward_row(xb, pb, (n_head, hs), bufs, ob);
                });
            }
        }
        self.push(out, &[qkv], || crate::ops::Op::Attention(Op::CausalSelfAttention { qkv, n_head, probs }))
    }
}

mod head;
mod shared;
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
    let mut cases = vec![
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
    ];
    cases.extend(shared::gradcheck_cases());
    cases
}
