//! The fused neural-network ops of a GPT: token embedding, layer normalisation, softmax and
//! log-softmax, and the losses over a vocabulary (cross-entropy, token log-probabilities, entropy).
//!
//! Every op is one tape node with a hand-written backward (llm.c style) instead of a chain of
//! elementwise nodes, so a `(N, V)` logits tensor is never copied more than the gradient requires.
//! Rows (the last axis) are independent: they are processed in parallel, and every reduction
//! *across* rows runs in a fixed order, so results are bit-identical whatever the thread count.
//!
//! The raw row kernels are public in [`kernels`] for the no-grad inference path.

use ndarray::{ArrayD, IxDyn};

use crate::Float;
use crate::tape::Backward;

mod embedding;
pub(crate) use embedding::{rows_mut, scatter_add_rows};
pub mod kernels;
mod layer_norm;
mod loss;
mod softmax;

/// The backward records of the nn ops (each variant holds the inputs and the per-row caches).
pub(crate) enum Op<F> {
    Embedding(embedding::Embedding),
    LayerNorm(layer_norm::LayerNorm<F>),
    Softmax(softmax::Softmax),
    LogSoftmax(softmax::LogSoftmax),
    CrossEntropy(loss::CrossEntropy<F>),
    TokenLogProbs(loss::TokenLogProbs<F>),
    Entropy(loss::Entropy<F>),
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match self {
            Op::Embedding(op) => op.backward(grad_out, ctx),
            Op::LayerNorm(op) => op.backward(grad_out, ctx),
            Op::Softmax(op) => op.backward(out, grad_out, ctx),
            Op::LogSoftmax(op) => op.backward(out, grad_out, ctx),
            Op::CrossEntropy(op) => op.backward(grad_out, ctx),
            Op::TokenLogProbs(op) => op.backward(grad_out, ctx),
            Op::Entropy(op) => op.backward(out, grad_out, ctx),
        }
    }
}

/// Splits a shape `(..., C)` into `(rows, C)`.
///
/// # Panics
/// If the shape is 0-d or its last axis is empty; the message names `op` and the shape.
pub(crate) fn rows_cols(op: &str, shape: &[usize]) -> (usize, usize) {
    let Some((&c, lead)) = shape.split_last() else {
        panic!("{op}: expected an array with a last (feature) axis, got shape {shape:?}");
    };
    assert!(c > 0, "{op}: the last axis of shape {shape:?} is empty");
    (lead.iter().product(), c)
}

/// Rows handed to one rayon task: about 16 K elements, so small inputs (one row at inference)
/// never leave the calling thread and large ones split into enough tasks to balance. The split
/// only decides which thread computes a row, never the arithmetic, so results do not depend on it.
pub(crate) fn rows_per_task(c: usize) -> usize {
    (16 * 1024 / c.max(1)).max(1)
}

/// `a` in standard (row-major) layout: moved through unchanged when it already is, so backward
/// can update an incoming gradient in place and hand it on without a copy.
pub(crate) fn into_standard<F: Clone>(a: ArrayD<F>) -> ArrayD<F> {
    if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() }
}

/// Copies integer ids (token ids, targets) in logical order and checks each is `< n`.
///
/// # Panics
/// On the first id `>= n`; the message names `op`, the id, its position, `what` and `n`.
pub(crate) fn checked_ids(op: &str, ids: &ArrayD<u32>, n: usize, what: &str) -> Vec<u32> {
    let ids: Vec<u32> = ids.iter().copied().collect();
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= n) {
        panic!("{op}: id {id} at flat position {i} is out of range: {what} V = {n}");
    }
    ids
}

/// The shape `(..., C)` without its last axis: the shape of the per-row ids and outputs.
pub(crate) fn lead_shape(shape: &[usize]) -> IxDyn {
    IxDyn(&shape[..shape.len() - 1])
}

/// Gradcheck helper: the id array stored in `ints` as `[rank, dims..., ids...]`.
#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn ids_from_ints(ints: &[usize]) -> ArrayD<u32> {
    let rank = ints[0];
    let shape = ints[1..=rank].to_vec();
    let ids = ints[rank + 1..].iter().map(|&i| i as u32).collect();
    ArrayD::from_shape_vec(shape, ids).expect("gradcheck ids match their shape")
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    let mut cases = embedding::gradcheck_cases();
    cases.extend(layer_norm::gradcheck_cases());
    cases.extend(softmax::gradcheck_cases());
    cases.extend(loss::gradcheck_cases());
    cases
}
