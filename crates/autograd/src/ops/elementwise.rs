//! Elementwise operations: binary ops with NumPy broadcasting (`binary`), unary maps
//! (`unary`) and dropout (`dropout`). Large tensors are processed on the rayon pool; every
//! output element is computed independently, so results do not depend on the thread count.

mod binary;
mod dropout;
pub(crate) mod kernels;
mod unary;

use ndarray::ArrayD;

use crate::Float;
use crate::tape::Backward;

pub(crate) enum Op<F> {
    Binary(binary::Op),
    Unary(unary::Op<F>),
    Dropout(dropout::Op),
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match self {
            Op::Binary(op) => op.backward(grad_out, ctx),
            Op::Unary(op) => op.backward(out, grad_out, ctx),
            Op::Dropout(op) => op.backward(grad_out, ctx),
        }
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    let mut cases = binary::gradcheck_cases();
    cases.extend(unary::gradcheck_cases());
    cases.extend(dropout::gradcheck_cases());
    cases
}

/// Proptest strategies shared by the elementwise cases.
#[cfg(any(test, feature = "gradcheck"))]
mod testing {
    use ndarray::ArrayD;
    use proptest::prelude::*;

    use crate::gradcheck::{array, shape};

    /// A shape that broadcasts to `full`: drops some leading axes and sets some sizes to one,
    /// as chosen by the bits of `bits`.
    fn shrink(full: &[usize], bits: u64) -> Vec<usize> {
        let drop = (bits % (full.len() as u64 + 1)) as usize;
        full[drop..].iter().enumerate().map(|(i, &n)| if bits >> (8 + i) & 1 == 1 { 1 } else { n }).collect()
    }

    /// Two shapes that broadcast together: one of them is a full shape of rank <= 4, the other a
    /// [`shrink`] of it, in either order.
    pub(super) fn broadcast_pair() -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
        (shape(4, 4), any::<u64>())
            .prop_map(|(a, bits)| {
                let b = shrink(&a, bits);
                if bits >> 7 & 1 == 1 { (a, b) } else { (b, a) }
            })
            .boxed()
    }

    /// Three shapes that broadcast together (for `select`'s mask, `a` and `b`).
    pub(super) fn broadcast_triple() -> BoxedStrategy<(Vec<usize>, Vec<usize>, Vec<usize>)> {
        (shape(4, 4), any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(full, x, y, z)| {
                // One of the three keeps the full shape so the output shape is exercised fully.
                let mut s = [shrink(&full, x), shrink(&full, y), shrink(&full, z)];
                s[(x % 3) as usize] = full;
                let [m, a, b] = s;
                (m, a, b)
            })
            .boxed()
    }

    /// An array of `shape` with `lo <= |x| < hi` and random signs.
    pub(super) fn nonzero_array(shape: Vec<usize>, lo: f64, hi: f64) -> BoxedStrategy<ArrayD<f64>> {
        let n = shape.iter().product::<usize>();
        (array(shape, lo, hi), prop::collection::vec(any::<bool>(), n))
            .prop_map(|(mut a, signs)| {
                a.iter_mut().zip(signs).for_each(|(v, s)| {
                    if s {
                        *v = -*v
                    }
                });
                a
            })
            .boxed()
    }
}
