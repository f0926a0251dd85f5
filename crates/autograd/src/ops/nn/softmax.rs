//! Softmax and log-softmax over the last axis, max-subtracted, with fused backward passes that
//! reuse the output and update the incoming gradient in place.

use ndarray::ArrayD;
use rayon::prelude::*;

use super::kernels::{dot, logsumexp, softmax_row_in_place, sum};
use super::{into_standard, rows_cols, rows_per_task};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Backward record of `softmax(x)` (the output `y` is the node's value).
pub(crate) struct Softmax {
    x: Var,
}

/// Backward record of `log_softmax(x)` (the output is the node's value).
pub(crate) struct LogSoftmax {
    x: Var,
}

impl Softmax {
    /// `dx = y * (dy - sum_j dy_j y_j)`, row by row, written over `dy`.
    pub(crate) fn backward<F: Float>(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let mut g = into_standard(grad_out);
        let c = *out.shape().last().expect("softmax output has a last axis");
        let y = out.as_slice().expect("op outputs are standard layout");
        let gs = g.as_slice_mut().expect("standard layout");
        gs.par_chunks_mut(c).zip(y.par_chunks(c)).with_min_len(rows_per_task(c)).for_each(|(dy, y)| {
            let s = dot(dy, y);
            for (d, &p) in dy.iter_mut().zip(y) {
                *d = p * (*d - s);
            }
        });
        ctx.add(self.x, g);
    }
}

impl LogSoftmax {
    /// `dx = dy - softmax(x) * sum_j dy_j`, with `softmax(x) = exp(y)`, written over `dy`.
    pub(crate) fn backward<F: Float>(&self, out: &ArrayD<F>, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let mut g = into_standard(grad_out);
        let c = *out.shape().last().expect("log_softmax output has a last axis");
        let y = out.as_slice().expect("op outputs are standard layout");
        let gs = g.as_slice_mut().expect("standard layout");
        gs.par_chunks_mut(c).zip(y.par_chunks(c)).with_min_len(rows_per_task(c)).for_each(|(dy, y)| {
            let s = sum(dy);
            for (d, &logp) in dy.iter_mut().zip(y) {
                *d -= logp.exp_fast() * s;
            }
        });
        ctx.add(self.x, g);
    }
}

impl<F: Float> Tape<F> {
    /// `softmax(x)` over the last axis: `y_j = exp(x_j - m) / sum_k exp(x_k - m)`, `m = max_k x_k`.
    ///
    /// # Panics
    /// If `x` is 0-d or its last axis is empty.
    pub fn softmax(&mut self, x: Var) -> Var {
        let (_, c) = rows_cols("softmax", self.shape(x));
        let mut y = self.value(x).as_standard_layout().into_owned();
        y.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(c)
            .with_min_len(rows_per_task(c))
            .for_each(softmax_row_in_place);
        self.push(y, &[x], || crate::ops::Op::Nn(super::Op::Softmax(Softmax { x })))
    }

    /// `log_softmax(x)` over the last axis: `y_j = x_j - logsumexp(x)`, finite for any finite `x`.
    ///
    /// # Panics
    /// If `x` is 0-d or its last axis is empty.
    pub fn log_softmax(&mut self, x: Var) -> Var {
        let (_, c) = rows_cols("log_softmax", self.shape(x));
        let mut y = self.value(x).as_standard_layout().into_owned();
        y.as_slice_mut().expect("standard layout").par_chunks_mut(c).with_min_len(rows_per_task(c)).for_each(
            |row| {
                let lse = logsumexp(row);
                for v in row.iter_mut() {
                    *v -= lse;
                }
            },
        );
        self.push(y, &[x], || crate::ops::Op::Nn(super::Op::LogSoftmax(LogSoftmax { x })))
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    fn softmax<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.softmax(x[0])
    }
    fn log_softmax<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.log_softmax(x[0])
    }
    fn logits() -> BoxedStrategy<Sample> {
        shape(3, 5)
            .prop_flat_map(|s| (array(s, -3.0, 3.0), any::<u64>()))
            .prop_map(|(x, seed)| Sample { seed_weights: seed, ..Sample::new(vec![x]) })
            .boxed()
    }
    vec![gradcheck_case!("softmax", logits, softmax), gradcheck_case!("log_softmax", logits, log_softmax)]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, Axis, array};

    use crate::Tape;
    use crate::ops::nn::kernels::{log_softmax_row, softmax_row_in_place};

    #[test]
    fn softmax_rows_sum_to_one_and_are_stable_for_huge_logits() {
        let mut t = Tape::<f32>::new();
        let x = t.input(array![[1e4f32, 1e4, -1e4], [0.0, 1.0, 2.0], [-1e4, -1e4, -1e4 + 1.0]].into_dyn());
        let y = t.softmax(x);
        let y = t.value(y);
        assert!(y.iter().all(|p| p.is_finite()));
        for s in y.sum_axis(Axis(1)).iter() {
            assert!((s - 1.0).abs() < 1e-6, "row sum {s}");
        }
        assert_eq!(y[[0, 0]], 0.5);
        assert_eq!(y[[0, 2]], 0.0);
        let e = std::f32::consts::E;
        assert!((y[[2, 2]] - e / (2.0 + e)).abs() < 1e-6);
    }

    #[test]
    fn log_softmax_is_stable_for_huge_logits_and_matches_the_kernels() {
        let x = array![[1e4f64, 0.0, -2.0, 1e4 - 3.0], [0.1, 0.2, 0.3, 0.4]].into_dyn();
        let mut t = Tape::<f64>::new();
        let xv = t.input(x.clone());
        let (ls, sm) = (t.log_softmax(xv), t.softmax(xv));
        assert!(t.value(ls).iter().all(|v| v.is_finite()));
        for (r, row) in x.rows().into_iter().enumerate() {
            let mut out = [0.0; 4];
            log_softmax_row(row.as_slice().unwrap(), &mut out);
            let mut p = row.to_vec();
            softmax_row_in_place(&mut p);
            for j in 0..4 {
                assert_eq!(t.value(ls)[[r, j]], out[j]);
                assert_eq!(t.value(sm)[[r, j]], p[j]);
            }
        }
        assert!((t.value(ls)[[0, 1]] + 1e4 + (1.0 + (-3.0f64).exp()).ln()).abs() < 1e-9);
    }

    #[test]
    fn softmax_of_a_transposed_input_normalises_its_logical_rows() {
        let x = ArrayD::from_shape_vec(vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let xt = x.t().to_owned(); // logical (2, 3), column-major memory
        let mut t = Tape::<f64>::new();
        let v = t.input(xt.clone());
        let y = t.softmax(v);
        for (row, xrow) in t.value(y).rows().into_iter().zip(xt.rows()) {
            let mut p = xrow.to_vec();
            softmax_row_in_place(&mut p);
            assert_eq!(row.to_vec(), p);
        }
    }

    #[test]
    #[should_panic(expected = "softmax: expected an array with a last (feature) axis")]
    fn softmax_of_a_scalar_panics() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::from_elem(vec![], 1.0));
        t.softmax(x);
    }
}
