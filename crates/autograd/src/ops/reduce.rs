//! Reductions: `sum` and `mean` over chosen axes, and over everything.
//!
//! Determinism: every output element is summed in an order fixed by the shape alone (blocks of
//! consecutive elements, then the block sums in order), never by how rayon splits the work. So a
//! sum is bit-identical whatever the thread count. The blocking also keeps f32 rounding error
//! growing with the block count rather than the element count.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rayon::prelude::*;

use crate::ops::elementwise::kernels::{into_standard, map, parallel};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Elements per block of a contiguous sum.
const BLOCK: usize = 4096;
/// Minimum rows per block when summing over leading axes (rows of `inner` elements).
const ROWS: usize = 64;

pub(crate) enum Op<F> {
    /// `scale * sum(x, axes)`: `scale` is 1 for `sum`, `1/n` for `mean`.
    Sum { x: Var, axes: Vec<usize>, scale: F },
}

impl<F: Float> Op<F> {
    pub(crate) fn backward(&self, _out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        match self {
            // d(scale sum_j x_j) / dx_i = scale: the gradient is broadcast back over the summed axes.
            Op::Sum { x, axes, scale } => {
                let shape = ctx.value(*x).shape().to_vec();
                let keep = keepdim_shape(&shape, axes);
                let scale = *scale;
                if keep == shape && scale == F::one() {
                    let g = into_standard(grad_out).into_shape_with_order(shape).expect("same element count");
                    ctx.add(*x, g);
                    return;
                }
                let g = grad_out.to_shape(keep).expect("same element count");
                let g = map(g.broadcast(shape.as_slice()).expect("keepdim shape broadcasts"), |v| v * scale);
                ctx.add(*x, g);
            }
        }
    }
}

/// `shape` with the `axes` set to one.
fn keepdim_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let mut keep = shape.to_vec();
    for &a in axes {
        keep[a] = 1;
    }
    keep
}

/// Checks `axes` against a tensor of `shape` and returns them sorted.
///
/// # Panics
/// On an axis out of range or a repeated axis (the message names `op`).
fn checked_axes(op: &str, shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    for (i, &a) in sorted.iter().enumerate() {
        assert!(a < shape.len(), "{op}: axis {a} out of range for shape {shape:?}");
        assert!(i == 0 || sorted[i - 1] != a, "{op}: axis {a} repeated in {axes:?}");
    }
    sorted
}

/// The sum of `x` over `axes` (sorted, distinct, in range), keeping them as size-one axes.
/// Deterministic whatever the thread count (see the module docs).
pub(crate) fn sum_axes<F: Float>(x: ArrayViewD<'_, F>, axes: &[usize]) -> ArrayD<F> {
    let out_shape = keepdim_shape(x.shape(), axes);
    let x = x.as_standard_layout();
    let mut shape = x.shape().to_vec();
    let mut data: Cow<'_, [F]> = Cow::Borrowed(x.as_slice().expect("standard layout"));
    // Collapse each run of consecutive reduced axes, last run first: the tensor is then a
    // row-major [outer, reduced, inner] block, whatever the earlier runs look like.
    let mut end = shape.len();
    while end > 0 {
        if !axes.contains(&(end - 1)) {
            end -= 1;
            continue;
        }
        let mut start = end - 1;
        while start > 0 && axes.contains(&(start - 1)) {
            start -= 1;
        }
        let outer: usize = shape[..start].iter().product();
        let reduced: usize = shape[start..end].iter().product();
        let inner: usize = shape[end..].iter().product();
        if reduced != 1 {
            data = Cow::Owned(sum_middle(&data, outer, reduced, inner));
        }
        shape[start..end].iter_mut().for_each(|n| *n = 1);
        end = start;
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), data.into_owned()).expect("sum keeps the element count")
}

/// Sums a row-major `[outer, r, inner]` buffer over its middle axis, giving `[outer, inner]`.
fn sum_middle<F: Float>(x: &[F], outer: usize, r: usize, inner: usize) -> Vec<F> {
    if r == 0 || outer * inner == 0 {
        return vec![F::zero(); outer * inner];
    }
    if inner == 1 { row_sums(x, outer, r) } else { column_sums(x, outer, r, inner) }
}

/// `out[o] = sum(x[o, :])` for contiguous rows of length `r`.
fn row_sums<F: Float>(x: &[F], outer: usize, r: usize) -> Vec<F> {
    if !parallel(x.len()) {
        return x.chunks(r).map(blocked_sum).collect();
    }
    if outer >= 64 {
        return x.par_chunks(r).map(blocked_sum).collect();
    }
    // Few long rows: split each row's blocks across threads, then add the block sums in order,
    // exactly as `blocked_sum` does sequentially.
    x.chunks(r)
        .map(|row| {
            let partial: Vec<F> = row.par_chunks(BLOCK).map(lane_sum).collect();
            partial.into_iter().fold(F::zero(), |acc, s| acc + s)
        })
        .collect()
}

/// The sum of `xs`: per block of [`BLOCK`] elements a [`lane_sum`], then the block sums in order.
fn blocked_sum<F: Float>(xs: &[F]) -> F {
    xs.chunks(BLOCK).map(lane_sum).fold(F::zero(), |acc, s| acc + s)
}

/// The sum of `xs` in eight interleaved accumulators (so the loop vectorizes), combined pairwise.
fn lane_sum<F: Float>(xs: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let c: &[F; 8] = c.try_into().expect("chunks of eight");
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    for (k, &v) in rest.iter().enumerate() {
        acc[k] += v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `out[o, :] = sum_k x[o, k, :]` over `r` rows of length `inner`: rows are summed in blocks of
/// at least [`ROWS`] rows (about [`BLOCK`] elements), then the block sums are added in order. The
/// blocks are independent, so they run in parallel without changing a single bit of the result.
fn column_sums<F: Float>(x: &[F], outer: usize, r: usize, inner: usize) -> Vec<F> {
    let rows_per_block = (BLOCK / inner).max(ROWS);
    let blocks = r.div_ceil(rows_per_block);
    let slab = r * inner;
    let block_sum = |t: usize| -> Vec<F> {
        let (o, b) = (t / blocks, t % blocks);
        let first = o * slab + b * rows_per_block * inner;
        let last = o * slab + ((b + 1) * rows_per_block).min(r) * inner;
        let rows = &x[first..last];
        let mut part = rows[..inner].to_vec();
        for row in rows.chunks_exact(inner).skip(1) {
            part.iter_mut().zip(row).for_each(|(p, &v)| *p += v);
        }
        part
    };
    let parts: Vec<Vec<F>> = if parallel(x.len()) {
        (0..outer * blocks).into_par_iter().map(block_sum).collect()
    } else {
        (0..outer * blocks).map(block_sum).collect()
    };
    let mut out = Vec::with_capacity(outer * inner);
    for per_outer in parts.chunks(blocks) {
        let mut acc = per_outer[0].clone();
        for part in &per_outer[1..] {
            acc.iter_mut().zip(part).for_each(|(a, &p)| *a += p);
        }
        out.extend(acc);
    }
    out
}

impl<F: Float> Tape<F> {
    fn reduce(&mut self, op: &str, x: Var, axes: &[usize], keepdim: bool, mean: bool) -> Var {
        let shape = self.shape(x).to_vec();
        let axes = checked_axes(op, &shape, axes);
        let n: usize = axes.iter().map(|&a| shape[a]).product();
        let scale = if mean { F::of(1.0 / n as f64) } else { F::one() };
        let mut value = sum_axes(self.value(x).view(), &axes);
        if mean {
            value.mapv_inplace(|v| v * scale);
        }
        if !keepdim {
            let out: Vec<usize> =
                shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            value = value.into_shape_with_order(out).expect("same element count");
        }
        self.push(value, &[x], || crate::ops::Op::Reduce(Op::Sum { x, axes, scale }))
    }

    /// The sum of `x` over `axes`. With `keepdim` the summed axes stay as size-one axes (so the
    /// result broadcasts against `x`); without, they are removed. An empty `axes` sums over
    /// nothing and returns a copy of `x` (unlike PyTorch, where `dim=[]` means every axis).
    ///
    /// # Panics
    /// If an axis is out of range or repeated.
    pub fn sum(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Var {
        self.reduce("sum", x, axes, keepdim, false)
    }

    /// The mean of `x` over `axes` (see [`Tape::sum`] for `axes` and `keepdim`). Averaging over
    /// an empty extent gives NaN.
    ///
    /// # Panics
    /// If an axis is out of range or repeated.
    pub fn mean(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Var {
        self.reduce("mean", x, axes, keepdim, true)
    }

    /// The sum of every element of `x`, as a 0-d tensor (shape `[]`), ready for [`Tape::backward`].
    pub fn sum_all(&mut self, x: Var) -> Var {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.reduce("sum_all", x, &axes, false, false)
    }

    /// The mean of every element of `x`, as a 0-d tensor (shape `[]`).
    pub fn mean_all(&mut self, x: Var) -> Var {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.reduce("mean_all", x, &axes, false, true)
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    /// Axes are the set bits of `ints[0]` below the rank; `flags[0]` is keepdim.
    fn axes_of(s: &Sample) -> Vec<usize> {
        (0..s.inputs[0].ndim()).filter(|i| s.ints[0] >> i & 1 == 1).collect()
    }
    fn sum<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.sum(x[0], &axes_of(s), s.flags[0])
    }
    fn mean<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.mean(x[0], &axes_of(s), s.flags[0])
    }
    fn sum_all<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.sum_all(x[0])
    }
    fn mean_all<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.mean_all(x[0])
    }
    fn drawn() -> BoxedStrategy<Sample> {
        (shape(4, 5), 0usize..16, any::<bool>(), any::<u64>())
            .prop_flat_map(|(s, bits, keep, w)| (array(s, -2.0, 2.0), Just(bits), Just(keep), Just(w)))
            .prop_map(|(a, bits, keep, w)| Sample {
                ints: vec![bits],
                flags: vec![keep],
                seed_weights: w,
                ..Sample::new(vec![a])
            })
            .boxed()
    }
    vec![
        gradcheck_case!("sum (axes, keepdim)", drawn, sum),
        gradcheck_case!("mean (axes, keepdim)", drawn, mean),
        gradcheck_case!("sum_all", drawn, sum_all),
        gradcheck_case!("mean_all", drawn, mean_all),
    ]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;

    fn iota(shape: &[usize]) -> ArrayD<f64> {
        let n = shape.iter().product::<usize>();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|v| v as f64).collect()).unwrap()
    }

    /// The reference: ndarray's own sums, one axis at a time.
    fn reference(x: &ArrayD<f64>, axes: &[usize]) -> ArrayD<f64> {
        let mut r = x.clone();
        for &a in axes {
            r = r.sum_axis(ndarray::Axis(a)).insert_axis(ndarray::Axis(a));
        }
        r
    }

    #[test]
    fn sum_axes_matches_a_reference_for_every_axis_subset() {
        let x = iota(&[2, 3, 4, 5]);
        for bits in 0..16usize {
            let axes: Vec<usize> = (0..4).filter(|i| bits >> i & 1 == 1).collect();
            assert_eq!(sum_axes(x.view(), &axes), reference(&x, &axes), "axes {axes:?}");
        }
        // A non-standard-layout input.
        let t = x.view().permuted_axes(vec![3, 1, 0, 2]);
        assert_eq!(sum_axes(t.view(), &[1, 3]), reference(&t.to_owned(), &[1, 3]));
    }

    #[test]
    fn forward_values_and_shapes() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        let s = t.sum(x, &[1], false);
        assert_eq!(t.value(s), &ArrayD::from_shape_vec(IxDyn(&[2]), vec![3.0, 12.0]).unwrap());
        let m = t.mean(x, &[0], true);
        assert_eq!(t.value(m), &ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1.5, 2.5, 3.5]).unwrap());
        let a = t.sum_all(x);
        assert_eq!(t.shape(a), &[] as &[usize]);
        assert_eq!(t.value(a)[[]], 15.0);
        let b = t.mean_all(x);
        assert_eq!(t.value(b)[[]], 2.5);
        let e = t.sum(x, &[], false);
        assert_eq!(t.value(e), t.value(x));
    }

    #[test]
    fn backward_broadcasts_the_gradient() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        let m = t.mean(x, &[1], false);
        let g = t.backward_with(m, ArrayD::from_shape_vec(IxDyn(&[2]), vec![3.0, 6.0]).unwrap());
        let want = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]).unwrap();
        assert_eq!(g.wrt(x).unwrap(), &want);
        let l = t.sum_all(x);
        let g = t.backward(l);
        assert_eq!(g.wrt(x).unwrap(), &ArrayD::from_elem(IxDyn(&[2, 3]), 1.0));
    }

    #[test]
    fn large_sums_are_identical_across_thread_counts() {
        // Shapes that take each parallel path: long rows, many rows, wide and narrow column sums.
        let cases: [(&[usize], &[usize]); 5] = [
            (&[3, 70_000], &[1]),
            (&[300, 300], &[1]),
            (&[40_000, 3], &[0]),
            (&[5, 20, 4000], &[1]),
            (&[2, 300, 200], &[0, 2]),
        ];
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (shape, axes) in cases {
            let mut s = 1u64;
            let x = ArrayD::from_shape_simple_fn(IxDyn(shape), || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            });
            let a = one.install(|| sum_axes(x.view(), axes));
            let b = two.install(|| sum_axes(x.view(), axes));
            assert_eq!(a, b, "shape {shape:?} axes {axes:?}");
            let want = reference(&x.mapv(|v| v as f64), axes);
            for (u, w) in a.iter().zip(want.iter()) {
                assert!((*u as f64 - w).abs() < 1e-3, "shape {shape:?}: {u} vs {w}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "sum: axis 2 out of range for shape [2, 3]")]
    fn axis_out_of_range_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        t.sum(x, &[2], false);
    }

    #[test]
    #[should_panic(expected = "mean: axis 1 repeated in [1, 1]")]
    fn repeated_axis_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        t.mean(x, &[1, 1], false);
    }
}
