//! Shape operations: reshape, permute/transpose, narrow (a slice along one axis) and concat.
//!
//! Every output is a fresh standard-layout (row-major, contiguous) array, so the kernels that
//! read it can work on plain slices. Backward moves or writes the gradient directly into place:
//! reshape moves it, narrow adds it into a window of the input's gradient slot.

use ndarray::{ArrayD, Axis, Slice, Zip};

use crate::Float;
use crate::ops::elementwise::kernels::{into_standard, to_standard, zip_apply};
use crate::tape::Backward;
use crate::{Tape, Var};

pub(crate) enum Op {
    Reshape(Var),
    /// `inverse` undoes the forward permutation.
    Permute {
        x: Var,
        inverse: Vec<usize>,
    },
    Narrow {
        x: Var,
        axis: usize,
        start: usize,
    },
    Concat {
        xs: Vec<Var>,
        axis: usize,
    },
}

impl Op {
    pub(crate) fn backward<F: Float>(
        &self,
        _out: &ArrayD<F>,
        grad_out: ArrayD<F>,
        ctx: &mut Backward<'_, F>,
    ) {
        match self {
            // Same elements in the same row-major order: just relabel the shape (no copy).
            Op::Reshape(x) => {
                let shape = ctx.value(*x).shape().to_vec();
                let g = into_standard(grad_out).into_shape_with_order(shape).expect("same element count");
                ctx.add(*x, g);
            }
            Op::Permute { x, inverse } => {
                let g = to_standard(grad_out.view().permuted_axes(inverse.as_slice()));
                ctx.add(*x, g);
            }
            // The window of x that was read gets the gradient; the rest of x gets zero.
            Op::Narrow { x, axis, start } => {
                if !ctx.needs(*x) {
                    return;
                }
                let len = grad_out.shape()[*axis];
                let slot = ctx.slot(*x);
                let window = slot.slice_axis_mut(Axis(*axis), Slice::from(*start..*start + len));
                zip_apply!(Zip::from(window).and(&grad_out), |s: &mut F, &g: &F| *s += g);
            }
            Op::Concat { xs, axis } => {
                let mut start = 0;
                for &x in xs {
                    let len = ctx.value(x).shape()[*axis];
                    if ctx.needs(x) {
                        let part = grad_out.slice_axis(Axis(*axis), Slice::from(start..start + len));
                        ctx.add(x, to_standard(part));
                    }
                    start += len;
                }
            }
        }
    }
}

impl<F: Float> Tape<F> {
    /// The elements of `x` in row-major order, arranged in `shape` (`torch.reshape`).
    ///
    /// # Panics
    /// If `shape` holds a different number of elements.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let from = self.shape(x);
        assert!(
            from.iter().product::<usize>() == shape.iter().product::<usize>(),
            "reshape: cannot reshape {from:?} into {shape:?} (element counts differ)"
        );
        let v = self.value(x);
        let value = if v.is_standard_layout() {
            to_standard(v.view().into_shape_with_order(shape).expect("standard layout reshapes"))
        } else {
            to_standard(v.view()).into_shape_with_order(shape).expect("standard layout reshapes")
        };
        self.push(value, &[x], || crate::ops::Op::Shape(Op::Reshape(x)))
    }

    /// Reorders the axes of `x`: output axis `i` is input axis `axes[i]` (`torch.permute`).
    ///
    /// # Panics
    /// If `axes` is not a permutation of `0..x.ndim()`.
    pub fn permute(&mut self, x: Var, axes: &[usize]) -> Var {
        let shape = self.shape(x);
        let mut inverse = vec![usize::MAX; shape.len()];
        for (i, &a) in axes.iter().enumerate() {
            assert!(
                axes.len() == shape.len() && a < shape.len() && inverse[a] == usize::MAX,
                "permute: axes {axes:?} are not a permutation of the axes of shape {shape:?}"
            );
            inverse[a] = i;
        }
        assert!(
            axes.len() == shape.len(),
            "permute: axes {axes:?} are not a permutation of the axes of shape {shape:?}"
        );
        let value = to_standard(self.value(x).view().permuted_axes(axes));
        self.push(value, &[x], || crate::ops::Op::Shape(Op::Permute { x, inverse }))
    }

    /// Swaps axes `a0` and `a1` of `x`.
    ///
    /// # Panics
    /// If either axis is out of range.
    pub fn transpose(&mut self, x: Var, a0: usize, a1: usize) -> Var {
        let n = self.shape(x).len();
        assert!(a0 < n && a1 < n, "transpose: axes ({a0}, {a1}) out of range for shape {:?}", self.shape(x));
        let mut axes: Vec<usize> = (0..n).collect();
        axes.swap(a0, a1);
        self.permute(x, &axes)
    }

    /// The slice `start..start + len` of `x` along `axis` (`torch.narrow`).
    ///
    /// # Panics
    /// If `axis` is out of range or the slice runs past the end of the axis.
    pub fn narrow(&mut self, x: Var, axis: usize, start: usize, len: usize) -> Var {
        let shape = self.shape(x);
        assert!(axis < shape.len(), "narrow: axis {axis} out of range for shape {shape:?}");
        assert!(
            start.checked_add(len).is_some_and(|end| end <= shape[axis]),
            "narrow: slice {start}..{} exceeds size {} of axis {axis} of shape {shape:?}",
            start.saturating_add(len),
            shape[axis]
        );
        let value = to_standard(self.value(x).slice_axis(Axis(axis), Slice::from(start..start + len)));
        self.push(value, &[x], || crate::ops::Op::Shape(Op::Narrow { x, axis, start }))
    }

    /// Joins `xs` along `axis` (`torch.cat`); all other sizes must agree.
    ///
    /// # Panics
    /// If `xs` is empty, `axis` is out of range, or two shapes differ outside `axis`.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Var {
        assert!(!xs.is_empty(), "concat: no inputs");
        let first = self.shape(xs[0]).to_vec();
        assert!(axis < first.len(), "concat: axis {axis} out of range for shape {first:?}");
        let mut shape = first.clone();
        shape[axis] = 0;
        for &x in xs {
            let s = self.shape(x);
            let agree = s.len() == first.len()
                && s.iter().zip(&first).enumerate().all(|(i, (a, b))| i == axis || a == b);
            assert!(agree, "concat: shapes {first:?} and {s:?} differ outside axis {axis}");
            shape[axis] += s[axis];
        }
        // ndarray's `concatenate` may return a non-standard layout; write into a row-major output.
        let mut value = crate::fill::zeros(&shape);
        let mut start = 0;
        for &x in xs {
            let part = self.value(x);
            let len = part.shape()[axis];
            let window = value.slice_axis_mut(Axis(axis), Slice::from(start..start + len));
            zip_apply!(Zip::from(window).and(part), |o: &mut F, &v: &F| *o = v);
            start += len;
        }
        self.push(value, xs, || crate::ops::Op::Shape(Op::Concat { xs: xs.to_vec(), axis }))
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    /// `ints` is the target shape.
    fn reshape<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.reshape(x[0], &s.ints)
    }
    /// `ints` is the permutation.
    fn permute<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.permute(x[0], &s.ints)
    }
    /// `ints = [a0, a1]`.
    fn transpose<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.transpose(x[0], s.ints[0], s.ints[1])
    }
    /// `ints = [axis, start, len]`.
    fn narrow<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.narrow(x[0], s.ints[0], s.ints[1], s.ints[2])
    }
    /// `ints = [axis]`; every input is joined.
    fn concat<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.concat(x, s.ints[0])
    }
    /// Narrow then concat with a piece of itself: the two paths into x must add up.
    fn narrow_concat<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        let part = t.narrow(x[0], s.ints[0], s.ints[1], s.ints[2]);
        t.concat(&[part, x[0], part], s.ints[0])
    }
    /// One input of a random shape, and `ints` computed from that shape.
    fn with_ints(ints: fn(&[usize], u64) -> Vec<usize>) -> BoxedStrategy<Sample> {
        (shape(4, 4), any::<u64>(), any::<u64>())
            .prop_flat_map(move |(s, bits, w)| (Just(ints(&s, bits)), array(s, -2.0, 2.0), Just(w)))
            .prop_map(|(ints, a, w)| Sample { ints, seed_weights: w, ..Sample::new(vec![a]) })
            .boxed()
    }
    /// A target shape of the same element count: the sizes' prime factors regrouped.
    fn regrouped(s: &[usize], bits: u64) -> Vec<usize> {
        let mut factors = Vec::new();
        for &n in s {
            let (mut n, mut p) = (n, 2);
            while n > 1 {
                while n % p == 0 {
                    factors.push(p);
                    n /= p;
                }
                p += 1;
            }
        }
        let mut out = vec![1];
        for (i, f) in factors.into_iter().enumerate() {
            if bits >> (i % 64) & 1 == 1 {
                out.push(f);
            } else {
                *out.last_mut().expect("non-empty") *= f;
            }
        }
        if bits >> 63 & 1 == 1 {
            out.insert(0, 1);
        }
        out
    }
    /// A permutation of the axes (a Fisher-Yates shuffle driven by `bits`).
    fn shuffled(s: &[usize], mut bits: u64) -> Vec<usize> {
        let mut p: Vec<usize> = (0..s.len()).collect();
        for i in (1..p.len()).rev() {
            p.swap(i, (bits % (i as u64 + 1)) as usize);
            bits /= i as u64 + 1;
        }
        p
    }
    fn two_axes(s: &[usize], bits: u64) -> Vec<usize> {
        vec![(bits % s.len() as u64) as usize, (bits >> 8) as usize % s.len()]
    }
    fn window(s: &[usize], bits: u64) -> Vec<usize> {
        let axis = (bits % s.len() as u64) as usize;
        let start = (bits >> 8) as usize % s[axis];
        let len = 1 + (bits >> 16) as usize % (s[axis] - start);
        vec![axis, start, len]
    }
    fn concat_inputs() -> BoxedStrategy<Sample> {
        (shape(4, 3), 1usize..4, any::<u64>(), any::<u64>())
            .prop_flat_map(|(s, k, bits, w)| {
                let axis = (bits % s.len() as u64) as usize;
                let shapes: Vec<Vec<usize>> = (0..k)
                    .map(|i| {
                        let mut si = s.clone();
                        si[axis] = 1 + (bits >> (8 + 2 * i)) as usize % 3;
                        si
                    })
                    .collect();
                let arrays: Vec<_> = shapes.into_iter().map(|si| array(si, -2.0, 2.0)).collect();
                (Just(axis), arrays, Just(w))
            })
            .prop_map(|(axis, inputs, w)| Sample { ints: vec![axis], seed_weights: w, ..Sample::new(inputs) })
            .boxed()
    }
    vec![
        gradcheck_case!("reshape", || with_ints(regrouped), reshape),
        gradcheck_case!("permute", || with_ints(shuffled), permute),
        gradcheck_case!("transpose", || with_ints(two_axes), transpose),
        gradcheck_case!("narrow", || with_ints(window), narrow),
        gradcheck_case!("concat", concat_inputs, concat),
        gradcheck_case!("narrow+concat (shared x)", || with_ints(window), narrow_concat),
    ]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use crate::Tape;

    fn iota(shape: &[usize]) -> ArrayD<f64> {
        let n = shape.iter().product::<usize>();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|v| v as f64).collect()).unwrap()
    }

    fn a(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn reshape_keeps_row_major_order() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        let y = t.reshape(x, &[3, 1, 2]);
        assert_eq!(t.value(y), &iota(&[3, 1, 2]));
        // From a non-standard-layout input: the logical order is what counts.
        let tx = t.input(iota(&[2, 3]).reversed_axes());
        let z = t.reshape(tx, &[6]);
        assert_eq!(t.value(z), &a(&[6], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        let g = t.backward_with(z, iota(&[6]));
        assert_eq!(g.wrt(tx).unwrap(), &a(&[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    }

    #[test]
    fn permute_and_transpose_values_are_standard_layout() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3, 4]));
        let p = t.permute(x, &[2, 0, 1]);
        assert_eq!(t.shape(p), &[4, 2, 3]);
        assert!(t.value(p).is_standard_layout());
        assert_eq!(t.value(p)[[3, 1, 2]], t.value(x)[[1, 2, 3]]);
        let q = t.transpose(x, 0, 2);
        assert_eq!(t.shape(q), &[4, 3, 2]);
        assert!(t.value(q).is_standard_layout());
        assert_eq!(t.value(q)[[3, 1, 0]], t.value(x)[[0, 1, 3]]);
        let g = t.backward_with(p, t.value(p).clone());
        assert_eq!(g.wrt(x).unwrap(), t.value(x));
    }

    #[test]
    fn narrow_and_concat_values() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 4]));
        let n = t.narrow(x, 1, 1, 2);
        assert_eq!(t.value(n), &a(&[2, 2], &[1.0, 2.0, 5.0, 6.0]));
        let y = t.input(a(&[2, 1], &[-1.0, -2.0]));
        let c = t.concat(&[n, y], 1);
        assert_eq!(t.value(c), &a(&[2, 3], &[1.0, 2.0, -1.0, 5.0, 6.0, -2.0]));
        assert!(t.value(c).is_standard_layout());
        let g = t.backward_with(c, iota(&[2, 3]));
        assert_eq!(g.wrt(x).unwrap(), &a(&[2, 4], &[0.0, 0.0, 1.0, 0.0, 0.0, 3.0, 4.0, 0.0]));
        assert_eq!(g.wrt(y).unwrap(), &a(&[2, 1], &[2.0, 5.0]));
        let r = t.concat(&[x, x], 0);
        assert_eq!(t.shape(r), &[4, 4]);
    }

    #[test]
    #[should_panic(expected = "reshape: cannot reshape [2, 3] into [4] (element counts differ)")]
    fn reshape_count_mismatch_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        t.reshape(x, &[4]);
    }

    #[test]
    #[should_panic(expected = "permute: axes [0, 0] are not a permutation of the axes of shape [2, 3]")]
    fn bad_permutation_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 3]));
        t.permute(x, &[0, 0]);
    }

    #[test]
    #[should_panic(expected = "narrow: slice 2..5 exceeds size 4 of axis 1 of shape [2, 4]")]
    fn narrow_out_of_range_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 4]));
        t.narrow(x, 1, 2, 3);
    }

    #[test]
    #[should_panic(expected = "concat: shapes [2, 4] and [3, 4] differ outside axis 1")]
    fn concat_shape_mismatch_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(iota(&[2, 4]));
        let y = t.input(iota(&[3, 4]));
        t.concat(&[x, y], 1);
    }
}
