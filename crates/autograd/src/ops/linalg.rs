//! Matrix products: the GEMM kernel ([`gemm`]), `matmul` and the fused `linear` layer.
//!
//! Every product lands in one GEMM call on contiguous or transposed views; backward accumulates
//! straight into the gradient slots (`beta = 1`) with transposed views, so it allocates nothing
//! beyond the slots themselves.

use ndarray::{
    ArrayD, ArrayView2, ArrayView3, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis, Ix1, Ix2, Zip,
};
use rayon::prelude::*;

use crate::tape::Backward;
use crate::{Float, Tape, Var};

mod kernel;

pub use kernel::{gemm, gemm_serial};

/// The backward records of this module's ops.
pub(crate) enum Op {
    /// `c = a·b` in one of the layouts of [`Tape::matmul`].
    Matmul { a: Var, b: Var },
    /// `y = x·w + b` ([`Tape::linear`]).
    Linear { x: Var, w: Var, b: Option<Var> },
    /// `c = a·bᵀ` with a 2-D `b` ([`Tape::matmul_t`]).
    MatmulT { a: Var, b: Var },
}

/// How the operands of a matmul line up: `batch` independent `(m, k)·(k, n)` products, or one
/// product when `b` is 2-D (then `a`'s leading axes are folded into `m`).
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

/// The dims of `a·b` and the output shape; panics on shapes that do not multiply.
fn matmul_dims(a: &[usize], b: &[usize]) -> (Dims, Vec<usize>) {
    let bad = || -> ! { panic!("matmul: shapes {a:?} and {b:?} cannot be multiplied") };
    if a.len() < 2 || b.len() < 2 {
        bad();
    }
    let (ra, rb) = (a.len(), b.len());
    let k = a[ra - 1];
    if b[rb - 2] != k {
        bad();
    }
    let n = b[rb - 1];
    let mut out = a[..ra - 1].to_vec();
    out.push(n);
    if rb == 2 {
        // (..., m, k)·(k, n): fold every leading axis of a into the rows of one big GEMM.
        let m = a[..ra - 1].iter().product();
        (Dims { batch: 1, m, k, n }, out)
    } else if ra == rb && a[..ra - 2] == b[..rb - 2] {
        let batch = a[..ra - 2].iter().product();
        (Dims { batch, m: a[ra - 2], k, n }, out)
    } else {
        bad()
    }
}

/// `x` as a `(batch, rows, cols)` view; copies only when `x` is not in row-major order.
fn as3<F: Float>(x: &ArrayD<F>, d: (usize, usize, usize)) -> ndarray::CowArray<'_, F, ndarray::Ix3> {
    x.to_shape(d).expect("matmul: operand reshapes to its batch of matrices")
}

/// `slot` as a `(batch, rows, cols)` mutable view, made row-major first if some op stored it otherwise.
fn slot3<F: Float>(slot: &mut ArrayD<F>, d: (usize, usize, usize)) -> ArrayViewMut3<'_, F> {
    if !slot.is_standard_layout() {
        *slot = slot.as_standard_layout().into_owned();
    }
    slot.view_mut().into_shape_with_order(d).expect("gradient slot has its value's shape")
}

/// `c[i] = alpha a[i]·b[i] + beta c[i]` for every matrix of the batch. Many small products run in
/// parallel over the batch, one single-threaded GEMM each; a short batch of big ones threads inside
/// each GEMM instead (one level of threading either way, and the same bits either way).
fn batched_gemm<F: Float>(
    alpha: F,
    a: ArrayView3<'_, F>,
    b: ArrayView3<'_, F>,
    beta: F,
    mut c: ArrayViewMut3<'_, F>,
) {
    if c.len_of(Axis(0)) >= rayon::current_num_threads() {
        Zip::from(c.outer_iter_mut())
            .and(a.outer_iter())
            .and(b.outer_iter())
            .par_for_each(|c, a, b| gemm_serial(alpha, a, b, beta, c));
    } else {
        for ((c, a), b) in c.outer_iter_mut().zip(a.outer_iter()).zip(b.outer_iter()) {
            gemm(alpha, a, b, beta, c);
        }
    }
}

/// Runs `f` on `v`'s gradient slot while still letting it read other nodes' values through `ctx`
/// (the slot is moved out for the duration: a borrow-checker detour, no copy).
fn with_slot<F: Float>(ctx: &mut Backward<'_, F>, v: Var, f: impl FnOnce(&Backward<'_, F>, &mut ArrayD<F>)) {
    let mut g = std::mem::take(ctx.slot(v));
    f(ctx, &mut g);
    *ctx.slot(v) = g;
}

/// A GEMM entry point: [`gemm`] (threaded over the pool) or [`gemm_serial`].
type Gemm<F> = fn(F, ArrayView2<'_, F>, ArrayView2<'_, F>, F, ArrayViewMut2<'_, F>);

/// The two operand gradients of a product, each written into its slot by `du` or `dv` with the
/// GEMM they are given, then `tail` (a bias gradient) on its own slot. When both are wanted, the
/// two products run side by side, one single-threaded GEMM each: they read the same `dC` and
/// write different slots, so neither needs a fork-join inside it. At a GRPO update's shapes
/// (thousands of rows, widths 64 to 512) the update ran about 6% faster than with each product
/// threaded (`docs/PERFORMANCE.md`). The bits are those of the threaded GEMM, which never splits
/// the sum over `k`.
///
/// `tail` runs after `du` on the same thread: `dv` (a weight's gradient, its sum over every row)
/// is the slower of the two, and the other thread would otherwise wait for it idle.
fn operand_grads<F: Float>(
    ctx: &mut Backward<'_, F>,
    (u, du): (Var, impl Fn(&Backward<'_, F>, &mut ArrayD<F>, Gemm<F>) + Sync),
    (v, dv): (Var, impl Fn(&Backward<'_, F>, &mut ArrayD<F>, Gemm<F>) + Sync),
    tail: Option<(Var, impl Fn(&mut ArrayD<F>) + Send)>,
) {
    let tail = tail.filter(|&(t, _)| ctx.needs(t));
    if ctx.needs(u) && ctx.needs(v) && u != v {
        let (mut su, mut sv) = (std::mem::take(ctx.slot(u)), std::mem::take(ctx.slot(v)));
        let mut st = tail.map(|(t, f)| (t, std::mem::take(ctx.slot(t)), f));
        {
            let ctx = &*ctx;
            rayon::join(
                || {
                    du(ctx, &mut su, gemm_serial);
                    if let Some((_, slot, f)) = &mut st {
                        f(slot);
                    }
                },
                || dv(ctx, &mut sv, gemm_serial),
            );
        }
        *ctx.slot(u) = su;
        *ctx.slot(v) = sv;
        if let Some((t, slot, _)) = st {
            *ctx.slot(t) = slot;
        }
        return;
    }
    if ctx.needs(u) {
        with_slot(ctx, u, |ctx, slot| du(ctx, slot, gemm));
    }
    if ctx.needs(v) {
        with_slot(ctx, v, |ctx, slot| dv(ctx, slot, gemm));
    }
    if let Some((t, f)) = tail {
        f(ctx.slot(t));
    }
}

/// `db[j] += sum_i g[i, j]`. Each column is summed over the rows in order, so the result does not
/// depend on the thread count; threads take disjoint blocks of columns.
fn add_column_sums<F: Float>(g: ArrayView2<'_, F>, mut db: ArrayViewMut1<'_, F>) {
    const COLS: usize = 256;
    db.axis_chunks_iter_mut(Axis(0), COLS).into_par_iter().zip(g.axis_chunks_iter(Axis(1), COLS)).for_each(
        |(mut acc, g)| {
            for row in g.rows() {
                acc += &row;
            }
        },
    );
}

impl Op {
    pub(crate) fn backward<F: Float>(
        &self,
        _out: &ArrayD<F>,
        grad_out: ArrayD<F>,
        ctx: &mut Backward<'_, F>,
    ) {
        match *self {
            Op::Matmul { a, b } => {
                let (d, _) = matmul_dims(ctx.value(a).shape(), ctx.value(b).shape());
                let Dims { batch, m, k, n } = d;
                let g = as3(&grad_out, (batch, m, n));
                // dA = dC·Bᵀ
                if ctx.needs(a) {
                    with_slot(ctx, a, |ctx, slot| {
                        let bv = as3(ctx.value(b), (batch, k, n));
                        let bt = bv.view().permuted_axes([0, 2, 1]);
                        batched_gemm(F::one(), g.view(), bt, F::one(), slot3(slot, (batch, m, k)));
                    });
                }
                // dB = Aᵀ·dC (summed over a's folded rows when b is 2-D: the same GEMM does it)
                if ctx.needs(b) {
                    with_slot(ctx, b, |ctx, slot| {
                        let av = as3(ctx.value(a), (batch, m, k));
                        let at = av.view().permuted_axes([0, 2, 1]);
                        batched_gemm(F::one(), at, g.view(), F::one(), slot3(slot, (batch, k, n)));
                    });
                }
            }
            Op::Linear { x, w, b } => {
                let (rows, d_in, d_out) = linear_dims(ctx.value(x).shape(), ctx.value(w).shape(), None);
                let g = grad_out.to_shape((rows, d_out)).expect("linear: gradient reshapes to rows");
                let g = g.view();
                // dX = dY·Wᵀ
                let dx = |ctx: &Backward<'_, F>, slot: &mut ArrayD<F>, gemm: Gemm<F>| {
                    let wv = ctx.value(w).view().into_dimensionality::<Ix2>().expect("2-D weight");
                    let out = slot3(slot, (1, rows, d_in)).index_axis_move(Axis(0), 0);
                    gemm(F::one(), g, wv.t(), F::one(), out);
                };
                // dW = Xᵀ·dY
                let dw = |ctx: &Backward<'_, F>, slot: &mut ArrayD<F>, gemm: Gemm<F>| {
                    let xv = as3(ctx.value(x), (1, rows, d_in));
                    let out = slot3(slot, (1, d_in, d_out)).index_axis_move(Axis(0), 0);
                    gemm(F::one(), xv.index_axis(Axis(0), 0).t(), g, F::one(), out);
                };
                // db = column sums of dY
                let db = |slot: &mut ArrayD<F>| {
                    add_column_sums(g, slot.view_mut().into_dimensionality::<Ix1>().expect("1-D bias"));
                };
                operand_grads(ctx, (x, dx), (w, dw), b.map(|b| (b, db)));
            }
            Op::MatmulT { a, b } => {
                let (m, k, n) = matmul_t_dims(ctx.value(a).shape(), ctx.value(b).shape());
                let g = as3(&grad_out, (1, m, n));
                let g = g.index_axis(Axis(0), 0);
                // dA = dC·B
                let da = |ctx: &Backward<'_, F>, slot: &mut ArrayD<F>, gemm: Gemm<F>| {
                    let bv = ctx.value(b).view().into_dimensionality::<Ix2>().expect("2-D b");
                    let out = slot3(slot, (1, m, k)).index_axis_move(Axis(0), 0);
                    gemm(F::one(), g, bv, F::one(), out);
                };
                // dB = dCᵀ·A (summed over a's folded rows by the same GEMM)
                let db = |ctx: &Backward<'_, F>, slot: &mut ArrayD<F>, gemm: Gemm<F>| {
                    let av = as3(ctx.value(a), (1, m, k));
                    let out = slot3(slot, (1, n, k)).index_axis_move(Axis(0), 0);
                    gemm(F::one(), g.t(), av.index_axis(Axis(0), 0), F::one(), out);
                };
                operand_grads(ctx, (a, da), (b, db), None::<(Var, fn(&mut ArrayD<F>))>);
            }
        }
    }
}

/// `(m, k, n)` of `a·bᵀ` with `a` `(..., k)` folded to `m` rows and `b` `(n, k)`; panics naming the
/// shapes when they do not fit.
fn matmul_t_dims(a: &[usize], b: &[usize]) -> (usize, usize, usize) {
    let ok = !a.is_empty() && b.len() == 2 && a[a.len() - 1] == b[1];
    assert!(ok, "matmul_t: shapes {a:?} and {b:?} cannot be multiplied as a·bᵀ (b must be (n, k))");
    (a[..a.len() - 1].iter().product(), b[1], b[0])
}

/// `(rows, in, out)` of a linear layer; panics naming the shapes when they do not fit.
fn linear_dims(x: &[usize], w: &[usize], b: Option<&[usize]>) -> (usize, usize, usize) {
    let ok = !x.is_empty() && w.len() == 2 && x[x.len() - 1] == w[0] && b.is_none_or(|b| b == [w[1]]);
    assert!(ok, "linear: input {x:?}, weight {w:?} (in, out) and bias {b:?} do not fit");
    (x[..x.len() - 1].iter().product(), w[0], w[1])
}

impl<F: Float> Tape<F> {
    /// Matrix product `a·b`:
    /// - `(m, k)·(k, n) -> (m, n)`;
    /// - batched `(..., m, k)·(..., k, n) -> (..., m, n)` with equal batch axes;
    /// - `(..., m, k)·(k, n) -> (..., m, n)`: a 2-D `b` applies to every matrix of `a` (one GEMM).
    ///
    /// # Panics
    /// If the shapes do not multiply in one of these ways.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (d, out_shape) = matmul_dims(self.shape(a), self.shape(b));
        let Dims { batch, m, k, n } = d;
        let mut out = ArrayD::zeros(out_shape);
        {
            let (av, bv) = (as3(self.value(a), (batch, m, k)), as3(self.value(b), (batch, k, n)));
            let c = out.view_mut().into_shape_with_order((batch, m, n)).expect("fresh output is row-major");
            batched_gemm(F::one(), av.view(), bv.view(), F::zero(), c);
        }
        self.push(out, &[a, b], || crate::ops::Op::Linalg(Op::Matmul { a, b }))
    }

    /// `a·bᵀ` for `a` `(..., k)` and a 2-D `b` `(n, k)`: `(..., n)`. Same value as
    /// `matmul(a, transpose(b, 0, 1))`, but the GEMM reads `b` through a transposed view in forward
    /// and backward, so `b` is never copied (the tied LM head, `logits = h·wteᵀ`).
    ///
    /// # Panics
    /// If `b` is not 2-D or the last axes of `a` and `b` differ.
    pub fn matmul_t(&mut self, a: Var, b: Var) -> Var {
        let (m, k, n) = matmul_t_dims(self.shape(a), self.shape(b));
        let mut out_shape = self.shape(a).to_vec();
        *out_shape.last_mut().expect("a has an axis") = n;
        let mut c = ndarray::Array2::zeros((m, n));
        {
            let av = as3(self.value(a), (1, m, k));
            let bv = self.value(b).view().into_dimensionality::<Ix2>().expect("2-D b");
            gemm(F::one(), av.index_axis(Axis(0), 0), bv.t(), F::zero(), c.view_mut());
        }
        let c = c.into_shape_with_order(out_shape).expect("rows fold back into the leading axes").into_dyn();
        self.push(c, &[a, b], || crate::ops::Op::Linalg(Op::MatmulT { a, b }))
    }

    /// Affine layer `y = x·w + b` in one node: `x` is `(..., in)`, `w` is `(in, out)` (GPT-2's
    /// `Conv1D` layout), `b` is `(out)`; `y` is `(..., out)`.
    ///
    /// # Panics
    /// If the shapes do not fit.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Var {
        let (rows, d_in, d_out) = linear_dims(self.shape(x), self.shape(w), b.map(|b| self.shape(b)));
        let mut out_shape = self.shape(x).to_vec();
        *out_shape.last_mut().expect("x has an axis") = d_out;
        // Start from the bias broadcast over the rows and let the GEMM add x·w to it (beta = 1).
        let (y, beta) = match b {
            Some(b) => {
                let bv = self.value(b).as_standard_layout();
                (crate::fill::repeat_row(bv.as_slice().expect("standard layout"), rows), F::one())
            }
            None => (crate::fill::zero_vec(rows * d_out), F::zero()),
        };
        let mut y = ndarray::Array2::from_shape_vec((rows, d_out), y).expect("rows x d_out");
        {
            let xv = as3(self.value(x), (1, rows, d_in));
            let wv = self.value(w).view().into_dimensionality::<Ix2>().expect("2-D weight");
            gemm(F::one(), xv.index_axis(Axis(0), 0), wv, beta, y.view_mut());
        }
        let y = y.into_shape_with_order(out_shape).expect("rows fold back into the leading axes").into_dyn();
        let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
        self.push(y, &inputs, || crate::ops::Op::Linalg(Op::Linear { x, w, b }))
    }
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array};
    use crate::gradcheck_case;

    fn matmul<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.matmul(x[0], x[1])
    }
    fn matmul_t<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.matmul_t(x[0], x[1])
    }
    fn linear<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.linear(x[0], x[1], x.get(2).copied())
    }
    /// Draws `a` of `a_shape`, `b` of `b_shape` (and more arrays) in [-1, 1] plus the weight seed.
    fn sample(shapes: Vec<Vec<usize>>) -> BoxedStrategy<Sample> {
        let arrays: Vec<_> = shapes.into_iter().map(|s| array(s, -1.0, 1.0)).collect();
        (arrays, any::<u64>())
            .prop_map(|(inputs, seed)| Sample { seed_weights: seed, ..Sample::new(inputs) })
            .boxed()
    }
    let dim = || 1usize..=4;
    vec![
        gradcheck_case!(
            "matmul (2-D)",
            move || (dim(), dim(), dim())
                .prop_flat_map(|(m, k, n)| sample(vec![vec![m, k], vec![k, n]]))
                .boxed(),
            matmul
        ),
        gradcheck_case!(
            "matmul (batched)",
            move || (1usize..=2, 1usize..=2, dim(), dim(), dim())
                .prop_flat_map(|(b, h, m, k, n)| sample(vec![vec![b, h, m, k], vec![b, h, k, n]]))
                .boxed(),
            matmul
        ),
        gradcheck_case!(
            "matmul (2-D b)",
            move || (1usize..=2, dim(), dim(), dim())
                .prop_flat_map(|(b, m, k, n)| sample(vec![vec![b, m, k], vec![k, n]]))
                .boxed(),
            matmul
        ),
        gradcheck_case!(
            "matmul_t (a·bᵀ)",
            move || (1usize..=2, dim(), dim(), dim())
                .prop_flat_map(|(b, m, k, n)| sample(vec![vec![b, m, k], vec![n, k]]))
                .boxed(),
            matmul_t
        ),
        gradcheck_case!(
            "linear (with bias)",
            move || (1usize..=2, dim(), dim(), dim())
                .prop_flat_map(|(b, t, i, o)| sample(vec![vec![b, t, i], vec![i, o], vec![o]]))
                .boxed(),
            linear
        ),
        gradcheck_case!(
            "linear (no bias)",
            move || (dim(), dim(), dim())
                .prop_flat_map(|(t, i, o)| sample(vec![vec![t, i], vec![i, o]]))
                .boxed(),
            linear
        ),
    ]
}
