//! Raw row kernels on contiguous slices, shared by the tape ops and the no-grad inference path
//! (the KV-cache sampler calls them once per token, so none of them allocates).
//!
//! Reductions over a row keep `LANES` independent accumulators, combined in a fixed order at
//! the end: the compiler can keep them in one SIMD register, and the result is the same on every
//! run (the order depends only on the row length).

use rayon::prelude::*;

use super::rows_per_task;
use crate::Float;

/// Independent accumulators per reduction (one AVX register of f32).
pub(crate) const LANES: usize = 8;

/// Combines the lane accumulators pairwise, in a fixed order.
#[inline]
pub(crate) fn combine<F: Float>(acc: [F; LANES]) -> F {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// `max_j x_j` (`-inf` for an empty row).
#[inline]
pub fn max<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = acc.iter().fold(F::neg_infinity(), |m, &a| m.max(a));
    for &v in rest {
        m = m.max(v);
    }
    m
}

/// `sum_j x_j`.
#[inline]
pub fn sum<F: Float>(x: &[F]) -> F {
    let mut acc = [F::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let mut s = combine(acc);
    for &v in rest {
        s += v;
    }
    s
}

/// `sum_j a_j b_j`.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    assert_eq!(a.len(), b.len(), "dot: lengths {} and {} differ", a.len(), b.len());
    let mut acc = [F::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = combine(acc);
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `sum_j exp(x_j - m)`: with `m = max(x)` every term is in (0, 1], so nothing overflows.
#[inline]
fn sum_exp_shifted<F: Float>(x: &[F], m: F) -> F {
    let mut acc = [F::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += (c[i] - m).exp_fast();
        }
    }
    let mut s = combine(acc);
    for &v in rest {
        s += (v - m).exp_fast();
    }
    s
}

/// `logsumexp(x) = m + ln sum_j exp(x_j - m)` with `m = max(x)` (exact for huge logits).
#[inline]
pub fn logsumexp<F: Float>(x: &[F]) -> F {
    let m = max(x);
    m + sum_exp_shifted(x, m).ln()
}

/// The entropy of `softmax(x)` and `logsumexp(x)`, from one pass of exponentials.
///
/// With `e_j = exp(x_j - m)` and `S = sum_j e_j`: `log p_j = x_j - m - ln S`, so
/// `H = -sum_j p_j log p_j = ln S - (sum_j e_j (x_j - m)) / S`.
#[inline]
pub fn entropy_and_logsumexp<F: Float>(x: &[F]) -> (F, F) {
    let m = max(x);
    let (mut s, mut t) = ([F::zero(); LANES], [F::zero(); LANES]);
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - m;
            let e = d.exp_fast();
            s[i] += e;
            t[i] += e * d;
        }
    }
    let (mut s, mut t) = (combine(s), combine(t));
    for &v in rest {
        let d = v - m;
        let e = d.exp_fast();
        s += e;
        t += e * d;
    }
    let ln_s = s.ln();
    (ln_s - t / s, m + ln_s)
}

/// `row <- softmax(row)`: `p_j = exp(x_j - m) / sum_k exp(x_k - m)` with `m = max(row)`.
/// Subtracting the max keeps it finite for any finite logits (1e4 included).
pub fn softmax_row_in_place<F: Float>(row: &mut [F]) {
    let m = max(row);
    // The exponentials on their own, so that the loop runs at the vector width (in one loop with
    // the sums it ran on 4-wide halves with shuffles); then the sum in the lanes' fixed order.
    for v in row.iter_mut() {
        *v = (*v - m).exp_fast();
    }
    let inv = sum(row).recip();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `out <- log_softmax(row)`: `log p_j = x_j - logsumexp(x)`.
///
/// # Panics
/// If `out` and `row` differ in length.
pub fn log_softmax_row<F: Float>(row: &[F], out: &mut [F]) {
    assert_eq!(
        row.len(),
        out.len(),
        "log_softmax_row: input length {} differs from output length {}",
        row.len(),
        out.len()
    );
    let lse = logsumexp(row);
    for (o, &x) in out.iter_mut().zip(row) {
        *o = x - lse;
    }
}

/// The mean and the reciprocal standard deviation of one row, for layer norm:
/// `mean = sum x / C`, `var = sum (x - mean)^2 / C` (biased, as GPT-2 and PyTorch),
/// `rstd = 1 / sqrt(var + eps)`. Two passes: `E[x^2] - mean^2` cancels badly in f32.
#[inline]
pub(crate) fn layer_norm_stats<F: Float>(x: &[F], eps: F) -> (F, F) {
    let n = F::of(x.len() as f64);
    let mean = sum(x) / n;
    let mut acc = [F::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut ss = combine(acc);
    for &v in rest {
        let d = v - mean;
        ss += d * d;
    }
    (mean, (ss / n + eps).sqrt().recip())
}

/// `out_j = (x_j - mean) * rstd * weight_j + bias_j` for one row.
#[inline]
pub(crate) fn layer_norm_apply<F: Float>(x: &[F], weight: &[F], bias: &[F], mean: F, rstd: F, out: &mut [F]) {
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * rstd * w + b;
    }
}

/// Layer norm of one row on the calling thread: the per-row computation of [`layer_norm_rows`],
/// for callers that already split their rows over threads.
pub fn layer_norm_row<F: Float>(x: &[F], weight: &[F], bias: &[F], eps: F, out: &mut [F]) {
    let (mean, rstd) = layer_norm_stats(x, eps);
    layer_norm_apply(x, weight, bias, mean, rstd, out);
}

/// Layer norm of contiguous rows of length `C = weight.len()`:
/// `out = (x - mean) / sqrt(var + eps) * weight + bias`, per row (see the tape's `layer_norm`).
/// Large inputs are split over rows in parallel; the result does not depend on the thread count.
///
/// # Panics
/// If `bias` differs in length from `weight`, `weight` is empty, `x.len()` is not a multiple of
/// `C`, or `out` differs in length from `x`.
pub fn layer_norm_rows<F: Float>(x: &[F], weight: &[F], bias: &[F], eps: F, out: &mut [F]) {
    let c = weight.len();
    assert!(
        c > 0 && bias.len() == c && x.len().is_multiple_of(c) && out.len() == x.len(),
        "layer_norm_rows: x of length {}, weight {}, bias {}, out {} (need C = weight = bias > 0, \
         x = out = a multiple of C)",
        x.len(),
        c,
        bias.len(),
        out.len()
    );
    x.par_chunks(c)
        .zip(out.par_chunks_mut(c))
        .with_min_len(rows_per_task(c))
        .for_each(|(x, o)| layer_norm_row(x, weight, bias, eps, o));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_naive_sums_for_every_remainder() {
        for n in 0..20 {
            let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            assert!((sum(&x) - x.iter().sum::<f64>()).abs() < 1e-12);
            assert!((dot(&x, &y) - x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>()).abs() < 1e-12);
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max(&x), m);
        }
    }

    #[test]
    fn softmax_row_sums_to_one_and_survives_huge_logits() {
        let mut row = vec![1e4f32, 1e4 - 1.0, -1e4, 0.0, 1e4, 3.0, 2.0, 1.0, 5.0];
        softmax_row_in_place(&mut row);
        assert!(row.iter().all(|p| p.is_finite() && *p >= 0.0));
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Two equal maxima share almost all the mass; e^-1 relative to them for 1e4 - 1.
        let z = 2.0 + (-1.0f64).exp();
        assert!((row[0] as f64 - 1.0 / z).abs() < 1e-6);
        assert!((row[1] as f64 - (-1.0f64).exp() / z).abs() < 1e-6);
        assert_eq!(row[2], 0.0);
    }

    #[test]
    fn log_softmax_row_is_log_of_softmax_and_finite_for_huge_logits() {
        let row = [1e4f64, 0.0, -3.0, 2.5, 1e4 - 2.0];
        let mut out = [0.0; 5];
        log_softmax_row(&row, &mut out);
        let mut p = row;
        softmax_row_in_place(&mut p);
        assert!(out.iter().all(|v| v.is_finite()));
        assert!((out[0] - p[0].ln()).abs() < 1e-12);
        assert!((out[4] - p[4].ln()).abs() < 1e-12);
        assert!((out[1] - (-1e4 - (1.0 + (-2.0f64).exp()).ln())).abs() < 1e-9);
    }

    #[test]
    fn entropy_of_uniform_and_peaked_rows() {
        let (h, lse) = entropy_and_logsumexp(&[0.5f64; 10]);
        assert!((h - 10f64.ln()).abs() < 1e-12);
        assert!((lse - (0.5 + 10f64.ln())).abs() < 1e-12);
        let (h, _) = entropy_and_logsumexp(&[1e4f64, 0.0, 0.0]);
        assert!(h.abs() < 1e-12);
    }

    #[test]
    fn layer_norm_rows_normalises_each_row() {
        let c = 5;
        let x: Vec<f64> = (0..3 * c).map(|i| (i * i) as f64 * 0.1 - 2.0).collect();
        let (w, b) = (vec![1.0; c], vec![0.0; c]);
        let mut out = vec![0.0; x.len()];
        layer_norm_rows(&x, &w, &b, 1e-12, &mut out);
        for row in out.chunks(c) {
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-9, "mean {mean}, var {var}");
        }
        // Weight scales and bias shifts the normalised row.
        let (w2, b2) = (vec![2.0; c], vec![0.5; c]);
        let mut out2 = vec![0.0; x.len()];
        layer_norm_rows(&x, &w2, &b2, 1e-12, &mut out2);
        for (a, b) in out.iter().zip(&out2) {
            assert!((2.0 * a + 0.5 - b).abs() < 1e-12);
        }
    }

    #[test]
    #[should_panic(expected = "layer_norm_rows")]
    fn layer_norm_rows_rejects_a_ragged_input() {
        let mut out = [0.0f32; 7];
        layer_norm_rows(&[0.0f32; 7], &[1.0; 3], &[0.0; 3], 1e-5, &mut out);
    }
}
