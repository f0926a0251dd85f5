//! Binary elementwise ops with NumPy broadcasting, and `select` (where).
//!
//! Backward of a broadcast op: the local derivative is evaluated at the output's shape, then
//! summed over the axes each operand was stretched along ([`sum_to_shape`]).

use ndarray::{ArrayD, ArrayViewD, Zip};

use super::kernels::{broadcast_shape, broadcast_view, map2, reduce_to_shape, sum_to_shape, zip_apply};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

pub(crate) enum Op {
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Div(Var, Var),
    Minimum(Var, Var),
    Maximum(Var, Var),
    /// `mask ? a : b`; the mask is kept at the output's shape.
    Select {
        mask: ArrayD<bool>,
        a: Var,
        b: Var,
    },
}

impl Op {
    pub(crate) fn backward<F: Float>(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match *self {
            // d(a + b) = da + db
            Op::Add(a, b) => linear(grad_out, ctx, a, b, false),
            // d(a - b) = da - db
            Op::Sub(a, b) => linear(grad_out, ctx, a, b, true),
            // d(a b) = b da + a db
            Op::Mul(a, b) => product(grad_out, ctx, a, b, |g, _, y| g * y, |g, x, _| g * x),
            // d(a / b) = da / b - a / b^2 db
            Op::Div(a, b) => product(grad_out, ctx, a, b, |g, _, y| g / y, |g, x, y| -g * x / (y * y)),
            // The gradient goes to the smaller (larger) operand; at a tie it is split half/half.
            Op::Minimum(a, b) => {
                product(grad_out, ctx, a, b, |g, x, y| g * tie_share(x, y), |g, x, y| g * tie_share(y, x))
            }
            Op::Maximum(a, b) => {
                product(grad_out, ctx, a, b, |g, x, y| g * tie_share(y, x), |g, x, y| g * tie_share(x, y))
            }
            Op::Select { ref mask, a, b } => select_backward(grad_out, ctx, mask, a, b),
        }
    }
}

/// The share of `minimum(x, y)`'s gradient that goes to `x`: all of it when `x < y`, half at a tie
/// (as `torch.minimum`), none when `x > y`. `maximum`'s share for `x` is `tie_share(y, x)`.
#[inline]
fn tie_share<F: Float>(x: F, y: F) -> F {
    if x < y {
        F::one()
    } else if x == y {
        F::of(0.5)
    } else {
        F::zero()
    }
}

/// Backward of `a + b` (`negate_b`: `a - b`): the gradient passes through unchanged, so the
/// operands that were not broadcast take `grad_out` itself (moved for the last, no copy).
fn linear<F: Float>(g: ArrayD<F>, ctx: &mut Backward<'_, F>, a: Var, b: Var, negate_b: bool) {
    let out_shape = g.shape().to_vec();
    let full = |v: Var, ctx: &Backward<'_, F>| ctx.value(v).shape() == out_shape.as_slice();
    let (na, nb) = (ctx.needs(a), ctx.needs(b));
    // Broadcast operands reduce from a view of g; they never need g's buffer.
    if nb && !full(b, ctx) {
        let mut gb = reduce_to_shape(g.view(), ctx.value(b).shape());
        if negate_b {
            gb.mapv_inplace(|v| -v);
        }
        ctx.add(b, gb);
    }
    if na && !full(a, ctx) {
        let ga = reduce_to_shape(g.view(), ctx.value(a).shape());
        ctx.add(a, ga);
    }
    let take_a = na && full(a, ctx);
    let take_b = nb && full(b, ctx);
    let mut g = Some(g);
    if take_b {
        // Copy only when `a` also wants the full gradient.
        let mut gb = if take_a { g.clone().expect("present") } else { g.take().expect("present") };
        if negate_b {
            zip_apply!(Zip::from(&mut gb), |v: &mut F| *v = -*v);
        }
        ctx.add(b, gb);
    }
    if take_a {
        ctx.add(a, g.take().expect("present"));
    }
}

/// Backward of a nonlinear binary op with local derivatives `da(g, a, b) = g dy/da` and
/// `db(g, a, b) = g dy/db`, evaluated at the broadcast shape. The last gradient needed is computed
/// in place in `grad_out`'s buffer.
fn product<F: Float>(
    mut g: ArrayD<F>,
    ctx: &mut Backward<'_, F>,
    a: Var,
    b: Var,
    da: impl Fn(F, F, F) -> F + Sync + Send,
    db: impl Fn(F, F, F) -> F + Sync + Send,
) {
    let (na, nb) = (ctx.needs(a), ctx.needs(b));
    let (ga, gb) = {
        let shape = g.shape().to_vec();
        let av = broadcast_view(ctx.value(a), &shape);
        let bv = broadcast_view(ctx.value(b), &shape);
        match (na, nb) {
            (true, true) => {
                let mut ga = g.clone();
                chain2(&mut ga, &av, &bv, &da);
                chain2(&mut g, &av, &bv, &db);
                (Some(ga), Some(g))
            }
            (true, false) => {
                chain2(&mut g, &av, &bv, &da);
                (Some(g), None)
            }
            (false, true) => {
                chain2(&mut g, &av, &bv, &db);
                (None, Some(g))
            }
            (false, false) => (None, None),
        }
    };
    if let Some(ga) = ga {
        let ga = sum_to_shape(ga, ctx.value(a).shape());
        ctx.add(a, ga);
    }
    if let Some(gb) = gb {
        let gb = sum_to_shape(gb, ctx.value(b).shape());
        ctx.add(b, gb);
    }
}

/// `g = d(g, a, b)` elementwise, in place.
fn chain2<F: Float>(
    g: &mut ArrayD<F>,
    a: &ArrayViewD<'_, F>,
    b: &ArrayViewD<'_, F>,
    d: &(impl Fn(F, F, F) -> F + Sync + Send),
) {
    zip_apply!(Zip::from(g).and(a).and(b), |g: &mut F, &x: &F, &y: &F| *g = d(*g, x, y));
}

/// Backward of `select`: `a` takes the gradient where the mask is true, `b` where it is false.
fn select_backward<F: Float>(g: ArrayD<F>, ctx: &mut Backward<'_, F>, mask: &ArrayD<bool>, a: Var, b: Var) {
    if ctx.needs(a) {
        let mut ga = crate::fill::zeros(g.shape());
        let pick = |o: &mut F, &g: &F, &m: &bool| *o = if m { g } else { F::zero() };
        zip_apply!(Zip::from(&mut ga).and(&g).and(mask), pick);
        let ga = sum_to_shape(ga, ctx.value(a).shape());
        ctx.add(a, ga);
    }
    if ctx.needs(b) {
        let mut gb = g;
        let pick = |g: &mut F, &m: &bool| *g = if m { F::zero() } else { *g };
        zip_apply!(Zip::from(&mut gb).and(mask), pick);
        let gb = sum_to_shape(gb, ctx.value(b).shape());
        ctx.add(b, gb);
    }
}

impl<F: Float> Tape<F> {
    /// Applies `f` elementwise to `a` and `b` broadcast together (`op` names the op in panics).
    fn broadcast_map(&self, op: &str, a: Var, b: Var, f: impl Fn(F, F) -> F + Sync + Send) -> ArrayD<F> {
        let shape = broadcast_shape(op, self.shape(a), self.shape(b));
        map2(broadcast_view(self.value(a), &shape), broadcast_view(self.value(b), &shape), f)
    }

    fn binary(&mut self, op: &str, a: Var, b: Var, f: impl Fn(F, F) -> F + Sync + Send, rec: Op) -> Var {
        let value = self.broadcast_map(op, a, b, f);
        self.push(value, &[a, b], || crate::ops::Op::Elementwise(super::Op::Binary(rec)))
    }

    /// `a + b` with NumPy broadcasting.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary("add", a, b, |x, y| x + y, Op::Add(a, b))
    }

    /// `a - b` with NumPy broadcasting.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.binary("sub", a, b, |x, y| x - y, Op::Sub(a, b))
    }

    /// `a * b` (elementwise) with NumPy broadcasting.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary("mul", a, b, |x, y| x * y, Op::Mul(a, b))
    }

    /// `a / b` (elementwise) with NumPy broadcasting. Division by zero gives IEEE infinities/NaN.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn div(&mut self, a: Var, b: Var) -> Var {
        self.binary("div", a, b, |x, y| x / y, Op::Div(a, b))
    }

    /// The elementwise minimum of `a` and `b`, with NumPy broadcasting; NaN propagates.
    ///
    /// Gradient: to the smaller operand. At a tie (`a == b`) each operand gets half of it, as
    /// `torch.minimum` does; the total is then still the full gradient and `minimum(a, b)` and
    /// `minimum(b, a)` have the same gradients.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn minimum(&mut self, a: Var, b: Var) -> Var {
        // `x + y` is NaN when either is NaN, the only way both comparisons can be false.
        let f = |x: F, y: F| {
            if x <= y {
                x
            } else if y < x {
                y
            } else {
                x + y
            }
        };
        self.binary("minimum", a, b, f, Op::Minimum(a, b))
    }

    /// The elementwise maximum of `a` and `b`, with NumPy broadcasting; NaN propagates.
    ///
    /// Gradient: to the larger operand; at a tie each operand gets half (as `torch.maximum`).
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn maximum(&mut self, a: Var, b: Var) -> Var {
        let f = |x: F, y: F| {
            if x >= y {
                x
            } else if y > x {
                y
            } else {
                x + y
            }
        };
        self.binary("maximum", a, b, f, Op::Maximum(a, b))
    }

    /// `mask ? a : b` elementwise (`torch.where`); `mask`, `a` and `b` broadcast to one shape.
    /// The gradient flows to `a` where the mask is true and to `b` elsewhere.
    ///
    /// # Panics
    /// If the three shapes do not broadcast.
    pub fn select(&mut self, mask: &ArrayD<bool>, a: Var, b: Var) -> Var {
        let ab = broadcast_shape("select", self.shape(a), self.shape(b));
        let shape = broadcast_shape("select (mask)", mask.shape(), &ab);
        let m = mask.broadcast(shape.as_slice()).expect("validated by broadcast_shape");
        let av = broadcast_view(self.value(a), &shape);
        let bv = broadcast_view(self.value(b), &shape);
        let mut value = crate::fill::zeros(shape.as_slice());
        zip_apply!(
            Zip::from(&mut value).and(&m).and(&av).and(&bv),
            |o: &mut F, &m: &bool, &x: &F, &y: &F| *o = if m { x } else { y }
        );
        self.push(value, &[a, b], || {
            let mask = m.to_owned();
            crate::ops::Op::Elementwise(super::Op::Binary(Op::Select { mask, a, b }))
        })
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(super) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use super::testing::{broadcast_pair, broadcast_triple, nonzero_array};
    use crate::gradcheck::{Sample, array};
    use crate::gradcheck_case;

    fn add<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.add(x[0], x[1])
    }
    fn sub<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.sub(x[0], x[1])
    }
    fn mul<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.mul(x[0], x[1])
    }
    fn div<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.div(x[0], x[1])
    }
    fn minimum<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.minimum(x[0], x[1])
    }
    fn maximum<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.maximum(x[0], x[1])
    }
    /// `x * x`: the same var as both operands (gradients from both sides accumulate).
    fn square<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.mul(x[0], x[0])
    }
    fn select<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        let mask = ArrayD::from_shape_vec(s.ints.clone(), s.flags.clone()).expect("mask shape");
        t.select(&mask, x[0], x[1])
    }
    /// Two broadcasting operands with values in `lo..hi`.
    fn pair(lo: f64, hi: f64) -> BoxedStrategy<Sample> {
        broadcast_pair()
            .prop_flat_map(move |(a, b)| (array(a, lo, hi), array(b, lo, hi), any::<u64>()))
            .prop_map(|(a, b, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a, b]) })
            .boxed()
    }
    /// Operands whose broadcast elements differ by at least 1e-2, keeping min/max away from ties.
    fn untied_pair() -> BoxedStrategy<Sample> {
        pair(-2.0, 2.0)
            .prop_filter("min/max operands too close to a tie", |s| {
                let (a, b) = (&s.inputs[0], &s.inputs[1]);
                let shape = broadcast_shape("t", a.shape(), b.shape());
                Zip::from(&broadcast_view(a, &shape))
                    .and(&broadcast_view(b, &shape))
                    .all(|&x, &y| (x - y).abs() > 1e-2)
            })
            .boxed()
    }
    vec![
        gradcheck_case!("add (broadcast)", || pair(-2.0, 2.0), add),
        gradcheck_case!("sub (broadcast)", || pair(-2.0, 2.0), sub),
        gradcheck_case!("mul (broadcast)", || pair(-2.0, 2.0), mul),
        gradcheck_case!(
            "div (broadcast)",
            || broadcast_pair()
                .prop_flat_map(|(a, b)| (array(a, -2.0, 2.0), nonzero_array(b, 0.5, 2.0), any::<u64>()))
                .prop_map(|(a, b, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a, b]) })
                .boxed(),
            div
        ),
        gradcheck_case!("minimum (broadcast)", untied_pair, minimum),
        gradcheck_case!("maximum (broadcast)", untied_pair, maximum),
        gradcheck_case!(
            "mul (x * x)",
            || crate::gradcheck::shape(4, 4)
                .prop_flat_map(|s| (array(s, -2.0, 2.0), any::<u64>()))
                .prop_map(|(a, seed)| Sample { seed_weights: seed, ..Sample::new(vec![a]) })
                .boxed(),
            square
        ),
        gradcheck_case!(
            "select (broadcast)",
            || broadcast_triple()
                .prop_flat_map(|(m, a, b)| {
                    let n = m.iter().product::<usize>();
                    (
                        Just(m),
                        prop::collection::vec(any::<bool>(), n),
                        array(a, -2.0, 2.0),
                        array(b, -2.0, 2.0),
                        any::<u64>(),
                    )
                })
                .prop_map(|(m, flags, a, b, seed)| Sample {
                    ints: m,
                    flags,
                    seed_weights: seed,
                    ..Sample::new(vec![a, b])
                })
                .boxed(),
            select
        ),
    ]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn, arr1, arr2};

    use crate::Tape;

    fn a(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn forward_values_broadcast() {
        let mut t = Tape::<f64>::new();
        let x = t.input(arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn());
        let y = t.input(arr1(&[10.0, 20.0, 30.0]).into_dyn());
        let s = t.sub(x, y);
        assert_eq!(t.value(s), &a(&[2, 3], &[-9.0, -18.0, -27.0, -6.0, -15.0, -24.0]));
        let m = t.mul(x, y);
        assert_eq!(t.value(m), &a(&[2, 3], &[10.0, 40.0, 90.0, 40.0, 100.0, 180.0]));
        let d = t.div(y, x);
        assert_eq!(t.value(d), &a(&[2, 3], &[10.0, 10.0, 10.0, 2.5, 4.0, 5.0]));
        assert!(t.value(d).is_standard_layout());
    }

    #[test]
    fn min_max_split_the_gradient_at_ties() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[3], &[1.0, 2.0, 3.0]));
        let y = t.input(a(&[3], &[2.0, 2.0, 2.0]));
        let lo = t.minimum(x, y);
        let hi = t.maximum(x, y);
        assert_eq!(t.value(lo), &a(&[3], &[1.0, 2.0, 2.0]));
        assert_eq!(t.value(hi), &a(&[3], &[2.0, 2.0, 3.0]));
        let g = t.backward_with(lo, a(&[3], &[1.0, 1.0, 1.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[3], &[1.0, 0.5, 0.0]));
        assert_eq!(g.wrt(y).unwrap(), &a(&[3], &[0.0, 0.5, 1.0]));
        let g = t.backward_with(hi, a(&[3], &[1.0, 1.0, 1.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[3], &[0.0, 0.5, 1.0]));
        assert_eq!(g.wrt(y).unwrap(), &a(&[3], &[1.0, 0.5, 0.0]));
    }

    #[test]
    fn min_max_propagate_nan() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[2], &[f64::NAN, 1.0]));
        let y = t.input(a(&[2], &[0.0, f64::NAN]));
        let lo = t.minimum(x, y);
        let hi = t.maximum(x, y);
        assert!(t.value(lo).iter().all(|v| v.is_nan()));
        assert!(t.value(hi).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn broadcast_gradients_sum_over_stretched_axes() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::from_elem(IxDyn(&[2, 3]), 1.0));
        let bias = t.input(a(&[3], &[1.0, 2.0, 3.0]));
        let y = t.sub(x, bias);
        let g = t.backward_with(y, ArrayD::from_elem(IxDyn(&[2, 3]), 2.0));
        assert_eq!(g.wrt(bias).unwrap(), &a(&[3], &[-4.0, -4.0, -4.0]));
        assert_eq!(g.wrt(x).unwrap(), &ArrayD::from_elem(IxDyn(&[2, 3]), 2.0));
    }

    #[test]
    fn add_of_a_var_with_itself_doubles_the_gradient() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[2], &[1.0, 2.0]));
        let y = t.add(x, x);
        let z = t.sub(x, x);
        let g = t.backward_with(y, a(&[2], &[1.0, 3.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[2], &[2.0, 6.0]));
        let g = t.backward_with(z, a(&[2], &[1.0, 3.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[2], &[0.0, 0.0]));
    }

    #[test]
    fn select_picks_and_routes_gradients() {
        let mut t = Tape::<f64>::new();
        let x = t.input(a(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        let y = t.input(a(&[1], &[-1.0]));
        let mask = ArrayD::from_shape_vec(IxDyn(&[2]), vec![true, false]).unwrap();
        let s = t.select(&mask, x, y);
        assert_eq!(t.value(s), &a(&[2, 2], &[1.0, -1.0, 3.0, -1.0]));
        let g = t.backward_with(s, a(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[2, 2], &[1.0, 0.0, 3.0, 0.0]));
        assert_eq!(g.wrt(y).unwrap(), &a(&[1], &[6.0]));
    }

    #[test]
    fn large_broadcast_ops_match_the_sequential_result() {
        // 64 x 1024 elements take the rayon path; compare against a plain loop.
        let mut t = Tape::<f32>::new();
        let xv = ArrayD::from_shape_fn(IxDyn(&[64, 1024]), |i| (i[0] as f32 - 30.0) * 0.1 + i[1] as f32);
        let bv = ArrayD::from_shape_fn(IxDyn(&[1024]), |i| 1.0 + i[0] as f32 * 0.01);
        let x = t.input(xv.clone());
        let b = t.input(bv.clone());
        let y = t.div(x, b);
        let want = ArrayD::from_shape_fn(IxDyn(&[64, 1024]), |i| xv[[i[0], i[1]]] / bv[[i[1]]]);
        assert_eq!(t.value(y), &want);
        let g = t.backward_with(y, ArrayD::from_elem(IxDyn(&[64, 1024]), 1.0));
        let gx = g.wrt(x).unwrap();
        assert_eq!(gx[[3, 7]], 1.0 / bv[[7]]);
    }

    #[test]
    #[should_panic(expected = "mul: shapes [2, 3] and [2] cannot be broadcast together")]
    fn mismatched_shapes_panic() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::zeros(IxDyn(&[2, 3])));
        let y = t.input(ArrayD::zeros(IxDyn(&[2])));
        t.mul(x, y);
    }

    #[test]
    #[should_panic(expected = "select (mask): shapes [3] and [2, 2] cannot be broadcast together")]
    fn select_mask_shape_mismatch_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::zeros(IxDyn(&[2, 2])));
        let mask = ArrayD::from_elem(IxDyn(&[3]), true);
        t.select(&mask, x, x);
    }
}
