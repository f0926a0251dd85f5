//! Elementwise operations: binary ops with NumPy broadcasting, and unary maps.

use ndarray::{ArrayD, Axis};

use crate::tape::Backward;
use crate::{Float, Tape, Var};

pub(crate) enum Op<F> {
    Add(Var, Var),
    Exp(Var),
    #[allow(dead_code)]
    Placeholder(std::marker::PhantomData<F>),
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match *self {
            // d(a + b) = da + db, summed over the broadcast axes of each operand.
            Op::Add(a, b) => {
                if ctx.needs(b) {
                    let gb = sum_to_shape(&grad_out, ctx.value(b).shape());
                    ctx.add(b, gb);
                }
                if ctx.needs(a) {
                    let ga = sum_to_shape(&grad_out, ctx.value(a).shape());
                    ctx.add(a, ga);
                }
            }
            // d exp(x) = exp(x) dx: reuse the output instead of recomputing.
            Op::Exp(x) => {
                let mut g = grad_out;
                g *= out;
                ctx.add(x, g);
            }
            Op::Placeholder(_) => {}
        }
    }
}

/// The shape two operands broadcast to (NumPy rules: align trailing axes; sizes equal or one).
///
/// # Panics
/// If the shapes are incompatible; the message names `op` and both shapes.
pub(crate) fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together"),
        };
    }
    out
}

/// Sums `g` over the axes that broadcasting added or stretched, giving an array of `shape`.
/// Returns `g` itself (no copy) when nothing was broadcast.
pub(crate) fn sum_to_shape<F: Float>(g: &ArrayD<F>, shape: &[usize]) -> ArrayD<F> {
    if g.shape() == shape {
        return g.clone();
    }
    let lead = g.ndim() - shape.len();
    let mut r = g.clone();
    for _ in 0..lead {
        r = r.sum_axis(Axis(0));
    }
    for (axis, &n) in shape.iter().enumerate() {
        if n == 1 && r.shape()[axis] != 1 {
            r = r.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    r
}

impl<F: Float> Tape<F> {
    /// `a + b` with NumPy broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        broadcast_shape("add", self.shape(a), self.shape(b));
        let value = self.value(a) + self.value(b);
        self.push(value, &[a, b], || crate::ops::Op::Elementwise(Op::Add(a, b)))
    }

    /// `exp(x)`, elementwise.
    pub fn exp(&mut self, x: Var) -> Var {
        let value = self.value(x).mapv(|v| v.exp());
        self.push(value, &[x], || crate::ops::Op::Elementwise(Op::Exp(x)))
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    fn add<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.add(x[0], x[1])
    }
    fn exp<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.exp(x[0])
    }
    /// Two shapes that broadcast: `b` drops leading axes of `a` and sets some sizes to one.
    fn broadcast_pair() -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
        (shape(4, 4), any::<u64>())
            .prop_map(|(a, bits)| {
                let drop = (bits % (a.len() as u64 + 1)) as usize;
                let b = a[drop..]
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| if bits >> (8 + i) & 1 == 1 { 1 } else { n })
                    .collect::<Vec<_>>();
                if bits >> 7 & 1 == 1 { (a, b) } else { (b, a) }
            })
            .boxed()
    }
    vec![
        gradcheck_case!(
            "add (broadcast)",
            || broadcast_pair()
                .prop_flat_map(|(a, b)| (array(a, -2.0, 2.0), array(b, -2.0, 2.0), any::<u64>()))
                .prop_map(|(a, b, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a, b]) })
                .boxed(),
            add
        ),
        gradcheck_case!(
            "exp",
            || shape(4, 4)
                .prop_flat_map(|s| (array(s, -2.0, 2.0), any::<u64>()))
                .prop_map(|(a, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a]) })
                .boxed(),
            exp
        ),
    ]
}
