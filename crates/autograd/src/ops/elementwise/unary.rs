//! Unary elementwise maps: arithmetic with a scalar, exp/log/sqrt/pow, activations, clamp, detach.
//!
//! Backward multiplies `grad_out` in place by the local derivative, read from the op's output when
//! that is cheaper than recomputing it from the input (exp, sqrt, tanh, sigmoid).

use ndarray::ArrayD;

use super::kernels::{chain, map, zip_apply};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// sqrt(2 / pi), the GELU tanh approximation's scale.
const GELU_K: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the GELU tanh approximation.
const GELU_C: f64 = 0.044_715;

pub(crate) enum Op<F> {
    Neg(Var),
    /// `x + c`: the gradient passes through.
    AddScalar(Var),
    /// `c x`.
    MulScalar(Var, F),
    Exp(Var),
    Log(Var),
    Sqrt(Var),
    /// `x^p`.
    Pow(Var, F),
    Tanh(Var),
    Sigmoid(Var),
    Relu(Var),
    Gelu(Var),
    Clamp {
        x: Var,
        lo: F,
        hi: F,
    },
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let one = F::one();
        let (x, g) = match *self {
            Op::Neg(x) => {
                let mut g = grad_out;
                zip_apply!(ndarray::Zip::from(&mut g), |v: &mut F| *v = -*v);
                (x, g)
            }
            Op::AddScalar(x) => (x, grad_out),
            Op::MulScalar(x, c) => {
                let mut g = grad_out;
                zip_apply!(ndarray::Zip::from(&mut g), |v: &mut F| *v *= c);
                (x, g)
            }
            // d exp(x) = exp(x) dx: reuse the output instead of recomputing.
            Op::Exp(x) => (x, chain(grad_out, out.view(), |g, y| g * y)),
            // d log(x) = dx / x
            Op::Log(x) => (x, chain(grad_out, ctx.value(x).view(), |g, x| g / x)),
            // d sqrt(x) = dx / (2 sqrt(x))
            Op::Sqrt(x) => (x, chain(grad_out, out.view(), |g, y| g / (y + y))),
            // d x^p = p x^(p-1) dx
            Op::Pow(x, p) => (x, chain(grad_out, ctx.value(x).view(), move |g, x| g * p * x.powf(p - one))),
            // d tanh(x) = (1 - tanh(x)^2) dx
            Op::Tanh(x) => (x, chain(grad_out, out.view(), move |g, y| g * (one - y * y))),
            // d sigmoid(x) = sigmoid(x) (1 - sigmoid(x)) dx
            Op::Sigmoid(x) => (x, chain(grad_out, out.view(), move |g, y| g * y * (one - y))),
            // Read the output: y > 0 exactly where x > 0, so the gradient at x = 0 is 0.
            Op::Relu(x) => (x, chain(grad_out, out.view(), |g, y| if y > F::zero() { g } else { F::zero() })),
            Op::Gelu(x) => (x, chain(grad_out, ctx.value(x).view(), |g, x| g * gelu_grad(x))),
            // PyTorch's convention (measured on torch 2.15): the gradient passes only strictly inside.
            Op::Clamp { x, lo, hi } => (
                x,
                chain(
                    grad_out,
                    ctx.value(x).view(),
                    move |g, x| if lo < x && x < hi { g } else { F::zero() },
                ),
            ),
        };
        ctx.add(x, g);
    }
}

/// GELU, tanh approximation (GPT-2):
/// `gelu(x) = 0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
///
/// Computed as `x σ(2u)`, the same function (`0.5 (1 + tanh(u)) = σ(2u)`), because σ needs one
/// exponential, which [`Float::exp_fast`] evaluates without a library call (vectorized in f32; the
/// exact `exp` in f64). libm's `tanhf` took a third of a training step.
#[inline]
fn gelu<F: Float>(x: F) -> F {
    let (k, c) = (F::of(GELU_K), F::of(GELU_C));
    let u = k * (x + c * x * x * x);
    x * (u + u).sigmoid_fast()
}

/// `gelu'(x) = s + 2 x s (1 - s) u'` with `s = σ(2u)`, `u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)`
/// (the tanh form's `0.5 (1 + t) + 0.5 x (1 - t^2) u'` with `t = 2s - 1`).
#[inline]
fn gelu_grad<F: Float>(x: F) -> F {
    let (k, c, one) = (F::of(GELU_K), F::of(GELU_C), F::one());
    let x2 = x * x;
    let u = k * (x + c * x2 * x);
    let s = (u + u).sigmoid_fast();
    let du = k * (one + F::of(3.0) * c * x2);
    s + (x + x) * s * (one - s) * du
}

impl<F: Float> Tape<F> {
    fn unary(&mut self, x: Var, f: impl Fn(F) -> F + Sync + Send, rec: Op<F>) -> Var {
        let value = map(self.value(x).view(), f);
        self.push(value, &[x], || crate::ops::Op::Elementwise(super::Op::Unary(rec)))
    }

    /// `-x`.
    pub fn neg(&mut self, x: Var) -> Var {
        self.unary(x, |v| -v, Op::Neg(x))
    }

    /// `x + c` for a scalar `c`.
    pub fn add_scalar(&mut self, x: Var, c: f64) -> Var {
        let c = F::of(c);
        self.unary(x, move |v| v + c, Op::AddScalar(x))
    }

    /// `c x` for a scalar `c`.
    pub fn mul_scalar(&mut self, x: Var, c: f64) -> Var {
        let c = F::of(c);
        self.unary(x, move |v| v * c, Op::MulScalar(x, c))
    }

    /// `exp(x)`, elementwise.
    pub fn exp(&mut self, x: Var) -> Var {
        self.unary(x, |v| v.exp(), Op::Exp(x))
    }

    /// The natural logarithm `ln(x)`, elementwise (NaN for `x < 0`, `-inf` at 0).
    pub fn log(&mut self, x: Var) -> Var {
        self.unary(x, |v| v.ln(), Op::Log(x))
    }

    /// `sqrt(x)`, elementwise. The gradient is infinite at 0.
    pub fn sqrt(&mut self, x: Var) -> Var {
        self.unary(x, |v| v.sqrt(), Op::Sqrt(x))
    }

    /// `x^p` for a scalar exponent `p` (NaN for negative `x` unless `p` is an integer).
    pub fn powf(&mut self, x: Var, p: f64) -> Var {
        let p = F::of(p);
        self.unary(x, move |v| v.powf(p), Op::Pow(x, p))
    }

    /// `tanh(x)`, elementwise.
    pub fn tanh(&mut self, x: Var) -> Var {
        self.unary(x, |v| v.tanh(), Op::Tanh(x))
    }

    /// The logistic function `1 / (1 + exp(-x))`, elementwise.
    pub fn sigmoid(&mut self, x: Var) -> Var {
        // exp(-x) overflows to inf for very negative x, which correctly gives 0, never NaN.
        self.unary(x, |v| F::one() / (F::one() + (-v).exp()), Op::Sigmoid(x))
    }

    /// `max(x, 0)`, elementwise. The gradient at exactly 0 is taken as 0 (as PyTorch).
    pub fn relu(&mut self, x: Var) -> Var {
        self.unary(x, |v| if v > F::zero() { v } else { F::zero() }, Op::Relu(x))
    }

    /// GELU with GPT-2's tanh approximation:
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, with its exact analytic derivative.
    pub fn gelu(&mut self, x: Var) -> Var {
        self.unary(x, gelu, Op::Gelu(x))
    }

    /// Clamps `x` to `[lo, hi]` (the PPO ratio clip).
    ///
    /// Gradient: 1 strictly inside, `lo < x < hi`, and 0 elsewhere, including exactly at a bound.
    /// This matches `torch.clamp` with scalar bounds (checked on torch 2.15: `clamp(x, 0., 1.)` has
    /// gradient 0 at `x = 0` and `x = 1`).
    ///
    /// # Panics
    /// If `lo > hi` or either bound is NaN.
    pub fn clamp(&mut self, x: Var, lo: f64, hi: f64) -> Var {
        assert!(lo <= hi, "clamp: lower bound {lo} exceeds upper bound {hi} (or a bound is NaN)");
        let (lo, hi) = (F::of(lo), F::of(hi));
        self.unary(
            x,
            move |v| {
                if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                }
            },
            Op::Clamp { x, lo, hi },
        )
    }

    /// A copy of `x`'s value through which no gradient flows (`torch.Tensor.detach`): it is a
    /// constant leaf, so backward stops there.
    pub fn detach(&mut self, x: Var) -> Var {
        let value = self.value(x).clone();
        self.constant(value)
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(super) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use super::testing::nonzero_array;
    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    /// One input of a random shape with values in `lo..hi`.
    fn one(lo: f64, hi: f64) -> BoxedStrategy<Sample> {
        shape(4, 4)
            .prop_flat_map(move |s| (array(s, lo, hi), any::<u64>()))
            .prop_map(|(a, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a]) })
            .boxed()
    }
    /// One input with `lo <= |x| < hi` (either sign): keeps kinks at zero out.
    fn one_nonzero(lo: f64, hi: f64) -> BoxedStrategy<Sample> {
        shape(4, 4)
            .prop_flat_map(move |s| (nonzero_array(s, lo, hi), any::<u64>()))
            .prop_map(|(a, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a]) })
            .boxed()
    }

    fn neg<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.neg(x[0])
    }
    fn add_scalar<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.add_scalar(x[0], 0.7)
    }
    fn mul_scalar<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.mul_scalar(x[0], -1.3)
    }
    fn exp<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.exp(x[0])
    }
    fn log<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.log(x[0])
    }
    fn sqrt<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.sqrt(x[0])
    }
    /// The exponent is `ints[0]` picked from a few integer and fractional powers.
    fn powf<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        const P: [f64; 5] = [2.0, 3.0, 0.5, -1.5, 1.3];
        t.powf(x[0], P[s.ints[0] % P.len()])
    }
    fn tanh<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.tanh(x[0])
    }
    fn sigmoid<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.sigmoid(x[0])
    }
    fn relu<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.relu(x[0])
    }
    fn gelu<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.gelu(x[0])
    }
    /// PPO's ratio clip at `1 -+ 0.2`.
    fn clamp<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.clamp(x[0], 0.8, 1.2)
    }
    vec![
        gradcheck_case!("neg", || one(-2.0, 2.0), neg),
        gradcheck_case!("add_scalar", || one(-2.0, 2.0), add_scalar),
        gradcheck_case!("mul_scalar", || one(-2.0, 2.0), mul_scalar),
        gradcheck_case!("exp", || one(-2.0, 2.0), exp),
        gradcheck_case!("log", || one(0.2, 3.0), log),
        gradcheck_case!("sqrt", || one(0.2, 3.0), sqrt),
        gradcheck_case!(
            "powf",
            || (one(0.3, 2.0), 0usize..5).prop_map(|(s, p)| Sample { ints: vec![p], ..s }).boxed(),
            powf
        ),
        gradcheck_case!("tanh", || one(-3.0, 3.0), tanh),
        gradcheck_case!("sigmoid", || one(-4.0, 4.0), sigmoid),
        gradcheck_case!("relu", || one_nonzero(1e-2, 2.0), relu),
        gradcheck_case!("gelu", || one(-4.0, 4.0), gelu),
        gradcheck_case!(
            "clamp",
            // Values spread across both bounds, nudged at least 5e-3 away from 0.8 and 1.2.
            || one(0.4, 1.6)
                .prop_map(|mut s| {
                    s.inputs[0].mapv_inplace(|v| {
                        if (v - 0.8).abs() < 5e-3 || (v - 1.2).abs() < 5e-3 { v + 1e-2 } else { v }
                    });
                    s
                })
                .boxed(),
            clamp
        ),
    ]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::{gelu, gelu_grad};
    use crate::Tape;

    fn a(v: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
    }

    fn close(x: &ArrayD<f64>, want: &[f64]) {
        for (i, (&u, &w)) in x.iter().zip(want).enumerate() {
            assert!((u - w).abs() <= 1e-12 * (1.0 + w.abs()), "element {i}: {u} vs {w}");
        }
    }

    #[test]
    fn forward_values() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[-2.0, 0.0, 0.5, 4.0]));
        let ops: Vec<(&str, ndarray::ArrayD<f64>, Vec<f64>)> = {
            let y = [
                ("neg", t.neg(x)),
                ("add_scalar", t.add_scalar(x, 1.5)),
                ("mul_scalar", t.mul_scalar(x, -2.0)),
                ("relu", t.relu(x)),
                ("clamp", t.clamp(x, -1.0, 1.0)),
                ("tanh", t.tanh(x)),
                ("sigmoid", t.sigmoid(x)),
            ];
            let want: [Vec<f64>; 7] = [
                vec![2.0, -0.0, -0.5, -4.0],
                vec![-0.5, 1.5, 2.0, 5.5],
                vec![4.0, -0.0, -1.0, -8.0],
                vec![0.0, 0.0, 0.5, 4.0],
                vec![-1.0, 0.0, 0.5, 1.0],
                [-2.0f64, 0.0, 0.5, 4.0].iter().map(|v| v.tanh()).collect(),
                [-2.0f64, 0.0, 0.5, 4.0].iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
            ];
            y.iter().zip(want).map(|(&(n, v), w)| (n, t.value(v).clone(), w)).collect()
        };
        for (name, got, want) in ops {
            assert_eq!(got.shape(), &[4], "{name}");
            close(&got, &want);
        }
        let p = t.input(a(&[0.25, 4.0]));
        let s = t.sqrt(p);
        close(t.value(s), &[0.5, 2.0]);
        let l = t.log(p);
        close(t.value(l), &[0.25f64.ln(), 4.0f64.ln()]);
        let q = t.powf(p, 1.5);
        close(t.value(q), &[0.125, 8.0]);
    }

    #[test]
    fn gelu_matches_gpt2_reference_values() {
        // Reference values of the tanh approximation (torch.nn.functional.gelu(x, approximate='tanh')).
        close(
            &a(&[gelu(1.0f64), gelu(-1.0), gelu(0.0), gelu(3.0)]),
            &[0.841_191_990_608_276_8, -0.158_808_009_391_723_24, 0.0, 2.996_362_607_918_227],
        );
        // The analytic derivative agrees with a central difference.
        for x in [-3.0f64, -0.7, 0.0, 0.4, 2.5] {
            let h = 1e-6;
            let fd = (gelu(x + h) - gelu(x - h)) / (2.0 * h);
            assert!((gelu_grad(x) - fd).abs() < 1e-8, "x = {x}");
        }
    }

    #[test]
    fn clamp_gradient_is_zero_at_and_beyond_its_bounds() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[0.5, 0.8, 1.0, 1.2, 1.5]));
        let y = t.clamp(x, 0.8, 1.2);
        close(t.value(y), &[0.8, 0.8, 1.0, 1.2, 1.2]);
        let g = t.backward_with(y, a(&[1.0; 5]));
        // torch.clamp(x, 0.8, 1.2).sum().backward() gives [0, 0, 1, 0, 0].
        assert_eq!(g.wrt(x).unwrap(), &a(&[0.0, 0.0, 1.0, 0.0, 0.0]));
    }

    #[test]
    fn relu_gradient_is_zero_at_zero() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[-1.0, 0.0, 2.0]));
        let y = t.relu(x);
        let g = t.backward_with(y, a(&[1.0; 3]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[0.0, 0.0, 1.0]));
    }

    #[test]
    fn detach_blocks_the_gradient() {
        // y = x * detach(x): dy/dx is detach(x) = x, not 2x.
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[3.0, -2.0]));
        let d = t.detach(x);
        assert!(!t.requires_grad(d));
        assert_eq!(t.value(d), t.value(x));
        let y = t.mul(x, d);
        let g = t.backward_with(y, a(&[1.0, 1.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[3.0, -2.0]));
        assert!(g.wrt(d).is_none());
    }

    #[test]
    #[should_panic(expected = "clamp: lower bound 2 exceeds upper bound 1")]
    fn clamp_with_crossed_bounds_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[0.0]));
        t.clamp(x, 2.0, 1.0);
    }
}
