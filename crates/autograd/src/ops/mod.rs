//! The differentiable operations. Each module adds methods to [`crate::Tape`] and defines the
//! backward records of its ops; this file only dispatches backward to the right module.

use ndarray::ArrayD;

use crate::Float;
use crate::params::ParamId;
use crate::tape::Backward;

pub mod attention;
pub mod elementwise;
pub mod linalg;
pub mod nn;
pub mod reduce;
pub mod shape;

/// The backward record of one node.
pub(crate) enum Op<F> {
    /// An input, constant or parameter: nothing to propagate.
    Leaf {
        param: Option<ParamId>,
    },
    Elementwise(elementwise::Op<F>),
    Reduce(reduce::Op<F>),
    Shape(shape::Op),
    Linalg(linalg::Op),
    Nn(nn::Op<F>),
    Attention(attention::Op<F>),
}

impl<F: Float> Op<F> {
    /// Propagates `grad_out` (the gradient of this node's value `out`) to the node's inputs.
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match self {
            Op::Leaf { .. } => {}
            Op::Elementwise(op) => op.backward(out, grad_out, ctx),
            Op::Reduce(op) => op.backward(out, grad_out, ctx),
            Op::Shape(op) => op.backward(out, grad_out, ctx),
            Op::Linalg(op) => op.backward(out, grad_out, ctx),
            Op::Nn(op) => op.backward(out, grad_out, ctx),
            Op::Attention(op) => op.backward(out, grad_out, ctx),
        }
    }
}
