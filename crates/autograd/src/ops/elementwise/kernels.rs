//! Kernels shared by the elementwise, reduction and shape ops: broadcasting, and elementwise loops
//! that switch to rayon on large tensors.
//!
//! Elementwise results do not depend on how the work is split (each output element is computed
//! alone), so the parallel and sequential paths give bit-identical values.

use ndarray::{ArrayD, ArrayViewD, Zip};
use rayon::prelude::*;

use crate::Float;

/// Tensors with at least this many elements are processed on the rayon pool; below it the cost of
/// splitting the work outweighs the gain.
pub(crate) const PAR_MIN_LEN: usize = 1 << 15;

/// Whether a loop over `n` elements should run on the rayon pool.
#[inline]
pub(crate) fn parallel(n: usize) -> bool {
    n >= PAR_MIN_LEN
}

/// Runs `f` over an ndarray `Zip`, in parallel when the zip is large. Elementwise, so the result
/// does not depend on the split.
macro_rules! zip_apply {
    ($zip:expr, $f:expr) => {{
        let zip = $zip;
        if $crate::ops::elementwise::kernels::parallel(zip.size()) {
            zip.par_for_each($f)
        } else {
            zip.for_each($f)
        }
    }};
}
pub(crate) use zip_apply;

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

/// A read-only view of `x` stretched to `shape` (which [`broadcast_shape`] has validated).
pub(crate) fn broadcast_view<'a, F>(x: &'a ArrayD<F>, shape: &[usize]) -> ArrayViewD<'a, F> {
    x.broadcast(shape).unwrap_or_else(|| panic!("cannot broadcast {:?} to {:?}", x.shape(), shape))
}

/// Sums the gradient `g` over the axes that broadcasting added or stretched, giving an array of
/// `shape`. Moves `g` through untouched (no copy) in the common case where nothing was broadcast.
pub(crate) fn sum_to_shape<F: Float>(g: ArrayD<F>, shape: &[usize]) -> ArrayD<F> {
    if g.shape() == shape { g } else { reduce_to_shape(g.view(), shape) }
}

/// [`sum_to_shape`] from a view: allocates only the (smaller) reduced array.
pub(crate) fn reduce_to_shape<F: Float>(g: ArrayViewD<'_, F>, shape: &[usize]) -> ArrayD<F> {
    assert!(
        g.ndim() >= shape.len(),
        "sum_to_shape: gradient of shape {:?} cannot reduce to {:?}",
        g.shape(),
        shape
    );
    let lead = g.ndim() - shape.len();
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &n) in shape.iter().enumerate() {
        let m = g.shape()[lead + i];
        if n != m {
            assert!(n == 1, "sum_to_shape: gradient of shape {:?} cannot reduce to {:?}", g.shape(), shape);
            axes.push(lead + i);
        }
    }
    let summed = crate::ops::reduce::sum_axes(g, &axes);
    summed.into_shape_with_order(shape).expect("a keepdim sum has the target's element count")
}

/// Elements per rayon task in the slice loops below: large enough to amortise the task, small
/// enough to balance two threads on every activation of the model.
const SLICE_CHUNK: usize = 1 << 14;

/// `out[i] = f(x[i])` over contiguous slices (a plain loop the compiler vectorizes), in parallel
/// chunks when large.
fn slice_map<F: Float>(out: &mut [F], x: &[F], f: impl Fn(F) -> F + Sync + Send) {
    let kernel = |out: &mut [F], x: &[F]| out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    if parallel(out.len()) {
        out.par_chunks_mut(SLICE_CHUNK).zip(x.par_chunks(SLICE_CHUNK)).for_each(|(o, x)| kernel(o, x));
    } else {
        kernel(out, x);
    }
}

/// `out[i] = f(out[i], v[i])` over contiguous slices, in parallel chunks when large.
pub(crate) fn slice_update<F: Float>(out: &mut [F], v: &[F], f: impl Fn(F, F) -> F + Sync + Send) {
    let kernel = |out: &mut [F], v: &[F]| out.iter_mut().zip(v).for_each(|(o, &v)| *o = f(*o, v));
    if parallel(out.len()) {
        out.par_chunks_mut(SLICE_CHUNK).zip(v.par_chunks(SLICE_CHUNK)).for_each(|(o, v)| kernel(o, v));
    } else {
        kernel(out, v);
    }
}

/// `out[i] = f(a[i], b[i])` over contiguous slices, in parallel chunks when large.
fn slice_map2<F: Float>(out: &mut [F], a: &[F], b: &[F], f: impl Fn(F, F) -> F + Sync + Send) {
    let kernel =
        |o: &mut [F], a: &[F], b: &[F]| o.iter_mut().zip(a).zip(b).for_each(|((o, &x), &y)| *o = f(x, y));
    if parallel(out.len()) {
        out.par_chunks_mut(SLICE_CHUNK)
            .zip(a.par_chunks(SLICE_CHUNK))
            .zip(b.par_chunks(SLICE_CHUNK))
            .for_each(|((o, a), b)| kernel(o, a, b));
    } else {
        kernel(out, a, b);
    }
}

/// `f(x)` for each element of `x`, into a new standard-layout array.
pub(crate) fn map<F: Float>(x: ArrayViewD<'_, F>, f: impl Fn(F) -> F + Sync + Send) -> ArrayD<F> {
    let mut out = crate::fill::zeros(x.shape());
    match (x.as_slice(), out.as_slice_mut()) {
        (Some(xs), Some(os)) => slice_map(os, xs, f),
        _ => zip_apply!(Zip::from(&mut out).and(&x), |o: &mut F, &v: &F| *o = f(v)),
    }
    out
}

/// `f(a, b)` for each pair of elements of two views of one shape, into a new standard-layout array.
pub(crate) fn map2<F: Float>(
    a: ArrayViewD<'_, F>,
    b: ArrayViewD<'_, F>,
    f: impl Fn(F, F) -> F + Sync + Send,
) -> ArrayD<F> {
    let mut out = crate::fill::zeros(a.shape());
    if a.shape() == b.shape()
        && let (Some(xs), Some(ys), Some(os)) = (a.as_slice(), b.as_slice(), out.as_slice_mut())
    {
        slice_map2(os, xs, ys, f);
        return out;
    }
    zip_apply!(Zip::from(&mut out).and(&a).and(&b), |o: &mut F, &x: &F, &y: &F| *o = f(x, y));
    out
}

/// `g = f(g, v)` elementwise, in place (the chain rule of a unary op: `v` is its input or output).
pub(crate) fn chain<F: Float>(
    mut g: ArrayD<F>,
    v: ArrayViewD<'_, F>,
    f: impl Fn(F, F) -> F + Sync + Send,
) -> ArrayD<F> {
    if g.shape() == v.shape()
        && let (Some(vs), Some(gs)) = (v.as_slice(), g.as_slice_mut())
    {
        slice_update(gs, vs, f);
        return g;
    }
    zip_apply!(Zip::from(&mut g).and(&v), |g: &mut F, &v: &F| *g = f(*g, v));
    g
}

/// A standard-layout (row-major, contiguous) copy of `x`, written in parallel when large.
pub(crate) fn to_standard<F: Float>(x: ArrayViewD<'_, F>) -> ArrayD<F> {
    if x.is_standard_layout() && !parallel(x.len()) {
        return x.to_owned();
    }
    map(x, |v| v)
}

/// `x` itself when it is already standard-layout, else a standard-layout copy.
pub(crate) fn into_standard<F: Float>(x: ArrayD<F>) -> ArrayD<F> {
    if x.is_standard_layout() { x } else { to_standard(x.view()) }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;

    #[test]
    fn broadcast_shape_follows_numpy() {
        assert_eq!(broadcast_shape("t", &[2, 1, 3], &[4, 1]), vec![2, 4, 3]);
        assert_eq!(broadcast_shape("t", &[], &[5]), vec![5]);
        assert_eq!(broadcast_shape("t", &[1], &[1, 1]), vec![1, 1]);
    }

    #[test]
    #[should_panic(expected = "mul: shapes [2, 3] and [4] cannot be broadcast together")]
    fn broadcast_shape_names_the_op_and_shapes() {
        broadcast_shape("mul", &[2, 3], &[4]);
    }

    #[test]
    fn sum_to_shape_moves_unbroadcast_gradients() {
        let g = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f64);
        let ptr = g.as_ptr();
        let r = sum_to_shape(g, &[2, 3]);
        assert_eq!(r.as_ptr(), ptr, "no copy when nothing was broadcast");
    }

    #[test]
    fn sum_to_shape_sums_broadcast_axes() {
        // g = [[0, 1, 2], [3, 4, 5]] stacked twice along a new leading axis.
        let g = ArrayD::from_shape_fn(IxDyn(&[2, 2, 3]), |i| (i[1] * 3 + i[2]) as f64);
        assert_eq!(sum_to_shape(g.clone(), &[3]).into_raw_vec_and_offset().0, vec![6.0, 10.0, 14.0]);
        assert_eq!(sum_to_shape(g.clone(), &[2, 1]).into_raw_vec_and_offset().0, vec![6.0, 24.0]);
        let r = sum_to_shape(g, &[1, 1, 3]);
        assert_eq!(r.shape(), &[1, 1, 3]);
        assert_eq!(r.into_raw_vec_and_offset().0, vec![6.0, 10.0, 14.0]);
    }

    #[test]
    fn maps_return_standard_layout_for_any_input_layout() {
        let x = ArrayD::from_shape_fn(IxDyn(&[300, 200]), |i| (i[0] * 200 + i[1]) as f32);
        for big in [false, true] {
            let x = if big { x.clone() } else { x.slice(ndarray::s![..3, ..4]).to_owned().into_dyn() };
            let t = x.t();
            let y = map(t.view(), |v| v + 1.0);
            assert!(y.is_standard_layout());
            assert_eq!(y, t.mapv(|v| v + 1.0));
            let s = to_standard(t.view());
            assert!(s.is_standard_layout());
            assert_eq!(s, t);
        }
    }
}
