//! Layer normalisation over the last axis (Ba et al. 2016), as in GPT-2:
//! `y = (x - mean) * rstd * weight + bias` with `rstd = 1 / sqrt(var + eps)`, biased variance.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::kernels::{LANES, combine, layer_norm_apply, layer_norm_stats};
use super::{into_standard, rows_cols, rows_per_task};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Rows per partial sum of the weight and bias gradients. Fixed (never derived from the thread
/// count), so the partials, and their in-order sum, are the same on every machine.
const CHUNK_ROWS: usize = 32;

/// Backward record: the three inputs and the per-row statistics of the forward pass.
pub(crate) struct LayerNorm<F> {
    x: Var,
    weight: Var,
    bias: Var,
    mean: Vec<F>,
    rstd: Vec<F>,
}

impl<F: Float> LayerNorm<F> {
    /// llm.c's `layernorm_backward`, with `norm = (x - mean) * rstd` and `dnorm = weight * dy`:
    ///
    /// ```text
    /// dx      = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
    /// dweight = sum over rows of norm * dy
    /// dbias   = sum over rows of dy
    /// ```
    ///
    /// `dx` overwrites `dy` row by row (each row only reads its own `dy`), so no buffer is allocated
    /// for it; the parameter sums go through fixed-size chunks of rows.
    pub(crate) fn backward(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        let need_x = ctx.needs(self.x);
        let need_wb = ctx.needs(self.weight) || ctx.needs(self.bias);
        let mut dy = into_standard(grad_out);
        let c = ctx.value(self.weight).len();
        // The borrows of the forward values end with this block, before the gradients are added.
        let partials: Vec<Vec<F>> = {
            let x = ctx.value(self.x).as_standard_layout();
            let w = ctx.value(self.weight).as_standard_layout();
            let (x, w) = (x.as_slice().expect("standard layout"), w.as_slice().expect("standard layout"));
            let dys = dy.as_slice_mut().expect("standard layout");
            x.par_chunks(CHUNK_ROWS * c)
                .zip(dys.par_chunks_mut(CHUNK_ROWS * c))
                .zip(self.mean.par_chunks(CHUNK_ROWS))
                .zip(self.rstd.par_chunks(CHUNK_ROWS))
                .with_min_len((rows_per_task(c) / CHUNK_ROWS).max(1))
                .map(|(((x, dy), mean), rstd)| {
                    let mut part = if need_wb { vec![F::zero(); 2 * c] } else { Vec::new() };
                    let rows = x.chunks_exact(c).zip(dy.chunks_exact_mut(c)).zip(mean).zip(rstd);
                    for (((x, dy), &mean), &rstd) in rows {
                        if need_wb {
                            let (dw, db) = part.split_at_mut(c);
                            accumulate_param_grads(x, dy, mean, rstd, dw, db);
                        }
                        if need_x {
                            input_grad_in_place(x, w, mean, rstd, dy);
                        }
                    }
                    part
                })
                .collect()
        };

        if need_wb {
            let mut sums = vec![F::zero(); 2 * c];
            for part in &partials {
                for (s, &p) in sums.iter_mut().zip(part) {
                    *s += p;
                }
            }
            let db = sums.split_off(c);
            ctx.add(self.weight, ArrayD::from_shape_vec(IxDyn(&[c]), sums).expect("length C"));
            ctx.add(self.bias, ArrayD::from_shape_vec(IxDyn(&[c]), db).expect("length C"));
        }
        if need_x {
            ctx.add(self.x, dy);
        }
    }
}

/// `dweight += norm * dy`, `dbias += dy` for one row.
#[inline]
fn accumulate_param_grads<F: Float>(x: &[F], dy: &[F], mean: F, rstd: F, dw: &mut [F], db: &mut [F]) {
    for (((gw, gb), &x), &d) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
        *gw += (x - mean) * rstd * d;
        *gb += d;
    }
}

/// `dy <- rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))` for one row.
#[inline]
fn input_grad_in_place<F: Float>(x: &[F], w: &[F], mean: F, rstd: F, dy: &mut [F]) {
    let (mut s1, mut s2) = ([F::zero(); LANES], [F::zero(); LANES]);
    let (cx, cw, cd) = (x.chunks_exact(LANES), w.chunks_exact(LANES), dy.chunks_exact(LANES));
    let (rx, rw, rd) = (cx.remainder(), cw.remainder(), cd.remainder());
    for ((x, w), d) in cx.zip(cw).zip(cd) {
        for i in 0..LANES {
            let dnorm = w[i] * d[i];
            s1[i] += dnorm;
            s2[i] += dnorm * (x[i] - mean) * rstd;
        }
    }
    let (mut s1, mut s2) = (combine(s1), combine(s2));
    for ((&x, &w), &d) in rx.iter().zip(rw).zip(rd) {
        let dnorm = w * d;
        s1 += dnorm;
        s2 += dnorm * (x - mean) * rstd;
    }
    let inv_c = F::of(x.len() as f64).recip();
    let (mean_dnorm, mean_dnorm_norm) = (s1 * inv_c, s2 * inv_c);
    for ((d, &x), &w) in dy.iter_mut().zip(x).zip(w) {
        let norm = (x - mean) * rstd;
        *d = rstd * (w * *d - mean_dnorm - norm * mean_dnorm_norm);
    }
}

impl<F: Float> Tape<F> {
    /// Layer norm over the last axis of `x` (`(..., C)`), with `weight` and `bias` of shape `(C)`:
    /// `y = (x - mean) / sqrt(var + eps) * weight + bias`, biased variance (GPT-2, PyTorch).
    ///
    /// # Panics
    /// If `x` has no last axis, or `weight`/`bias` are not of shape `(C)`.
    pub fn layer_norm(&mut self, x: Var, weight: Var, bias: Var, eps: f64) -> Var {
        let shape = self.shape(x).to_vec();
        let (n, c) = rows_cols("layer_norm", &shape);
        for (what, v) in [("weight", weight), ("bias", bias)] {
            assert!(
                self.shape(v) == [c],
                "layer_norm: {what} of shape {:?} does not match x of shape {shape:?} (expected [{c}])",
                self.shape(v)
            );
        }
        let eps = F::of(eps);
        let mut out = crate::fill::zero_vec(n * c);
        let (mut mean, mut rstd) = (vec![F::zero(); n], vec![F::zero(); n]);
        {
            let xs = self.value(x).as_standard_layout();
            let ws = self.value(weight).as_standard_layout();
            let bs = self.value(bias).as_standard_layout();
            let (ws, bs) = (ws.as_slice().expect("standard"), bs.as_slice().expect("standard"));
            xs.as_slice()
                .expect("standard layout")
                .par_chunks(c)
                .zip(out.par_chunks_mut(c))
                .zip(mean.par_iter_mut())
                .zip(rstd.par_iter_mut())
                .with_min_len(rows_per_task(c))
                .for_each(|(((x, o), m), r)| {
                    (*m, *r) = layer_norm_stats(x, eps);
                    layer_norm_apply(x, ws, bs, *m, *r, o);
                });
        }
        let value = ArrayD::from_shape_vec(IxDyn(&shape), out).expect("length matches shape");
        self.push(value, &[x, weight, bias], move || {
            crate::ops::Op::Nn(super::Op::LayerNorm(LayerNorm { x, weight, bias, mean, rstd }))
        })
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    fn ln<F: Float>(t: &mut Tape<F>, x: &[Var], _: &Sample) -> Var {
        t.layer_norm(x[0], x[1], x[2], 1e-5)
    }
    let strategy = || {
        (shape(2, 3), 2usize..=6)
            .prop_flat_map(|(mut s, c)| {
                s.push(c);
                (array(s, -2.0, 2.0), array(vec![c], -1.5, 1.5), array(vec![c], -1.0, 1.0), any::<u64>())
            })
            .prop_map(|(x, w, b, seed)| Sample { seed_weights: seed, ..Sample::new(vec![x, w, b]) })
            // A nearly constant row is a near-kink (as eps -> 0 the output jumps with the sign of
            // x - mean) where central differences lose accuracy: keep every row's variance >= 0.01.
            .prop_filter("layer_norm rows need some spread", |s| {
                let c = s.inputs[1].len();
                s.inputs[0].as_slice().expect("standard").chunks(c).all(|row| {
                    let mean = row.iter().sum::<f64>() / c as f64;
                    row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64 >= 0.01
                })
            })
            .boxed()
    };
    vec![gradcheck_case!("layer_norm (x, weight, bias)", strategy, ln)]
}

#[cfg(test)]
mod tests {
    use ndarray::ArrayD;

    use crate::Tape;
    use crate::ops::nn::kernels::layer_norm_rows;

    fn wave(shape: &[usize], k: f64) -> ArrayD<f32> {
        let mut i = 0.0;
        ArrayD::from_shape_fn(shape, |_| {
            i += 1.0;
            ((i * k).sin() * 3.0) as f32
        })
    }

    #[test]
    fn tape_layer_norm_matches_the_raw_kernel() {
        let (x, w, b) = (wave(&[2, 3, 7], 0.7), wave(&[7], 1.3), wave(&[7], 0.2));
        let mut t = Tape::<f32>::new();
        let (xv, wv, bv) = (t.input(x.clone()), t.input(w.clone()), t.input(b.clone()));
        let y = t.layer_norm(xv, wv, bv, 1e-5);
        let mut out = vec![0.0; x.len()];
        layer_norm_rows(x.as_slice().unwrap(), w.as_slice().unwrap(), b.as_slice().unwrap(), 1e-5, &mut out);
        assert_eq!(t.value(y).as_slice().unwrap(), &out[..]);
    }

    /// Forward and backward are bit-identical on one thread and on three (the partial sums of the
    /// weight gradient use fixed chunks, not one chunk per thread).
    #[test]
    fn backward_is_bit_identical_whatever_the_thread_count() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut t = Tape::<f32>::new();
                let x = t.input(wave(&[4, 300, 96], 0.37));
                let w = t.input(wave(&[96], 0.11));
                let b = t.input(wave(&[96], 0.05));
                let y = t.layer_norm(x, w, b, 1e-5);
                let g = t.backward_with(y, wave(&[4, 300, 96], 0.91));
                let grads: Vec<ArrayD<f32>> = [x, w, b].iter().map(|&v| g.wrt(v).unwrap().clone()).collect();
                (t.value(y).clone(), grads)
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[should_panic(expected = "layer_norm: weight of shape [4] does not match x of shape [2, 3]")]
    fn mismatched_weight_panics_naming_both_shapes() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::zeros(vec![2, 3]));
        let w = t.input(ArrayD::zeros(vec![4]));
        let b = t.input(ArrayD::zeros(vec![3]));
        t.layer_norm(x, w, b, 1e-5);
    }
}
