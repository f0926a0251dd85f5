//! The GEMM kernel every matrix product in pglm goes through: `C = alpha A·B + beta C`.
//!
//! Backend: the `gemm` crate (AVX-512 kernels through its `x86-v4` feature), chosen over ndarray's
//! `matrixmultiply` by measurement (`cargo bench -p pglm-autograd --bench gemm_backends`). It takes
//! arbitrary row and column strides, so transposed views (`a.t()`) cost nothing, which is what the
//! backward passes (`dA = dC·Bᵀ`, `dB = Aᵀ·dC`) rely on.
//!
//! Determinism: `gemm` splits only the `m` and `n` dimensions across threads and always walks `k` in
//! the same blocks, so every element of `C` is the same sum in the same order whatever the thread
//! count (tested below with rayon pools of 1 and 2 threads).

use ndarray::{ArrayView2, ArrayViewMut2, Zip};

use crate::Float;

/// `c = alpha a·b + beta c`, threaded over the current rayon pool.
///
/// `a` is `(m, k)`, `b` is `(k, n)`, `c` is `(m, n)`; any of them may be a transposed or strided view.
/// With `beta == 0` the old contents of `c` are ignored (NaNs included). The result is bit-identical
/// whatever the number of threads.
///
/// Do not call it from inside a parallel loop (one level of threading): use [`gemm_serial`] there.
///
/// # Panics
/// If the shapes do not agree; the message names all three.
pub fn gemm<F: Float>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm_with(alpha, a, b, beta, c, par);
}

/// [`gemm`] on the calling thread only, for the small products inside a parallel loop
/// (attention heads, batched matmul).
///
/// # Panics
/// If the shapes do not agree.
pub fn gemm_serial<F: Float>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    gemm_with(alpha, a, b, beta, c, gemm::Parallelism::None);
}

fn gemm_with<F: Float>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
    par: gemm::Parallelism,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(
        k == k2 && c.dim() == (m, n),
        "gemm: shapes {:?} · {:?} -> {:?} do not agree",
        a.shape(),
        b.shape(),
        c.shape()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: C = beta C (and exactly zero when beta is zero, whatever C held).
        if beta == F::zero() {
            c.fill(F::zero());
        } else {
            Zip::from(&mut c).for_each(|x| *x = beta * *x);
        }
        return;
    }
    gemm_raw(alpha, a, b, beta, c, par);
}

/// The one `unsafe` call: hands the views' pointers and strides to `gemm::gemm`, whose convention is
/// `dst = alpha' dst + beta' lhs·rhs` (so its `alpha'` is our `beta` and its `beta'` our `alpha`).
fn gemm_raw<F: Float>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
    par: gemm::Parallelism,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: `gemm::gemm` reads `m·k` elements of `a` and `k·n` of `b` and writes `m·n` of `c` at the
    // given pointers and element strides; these are exactly the elements of the three views, which
    // ndarray guarantees are in bounds (the caller checked m, n, k > 0 and that the shapes agree).
    // `c` is a unique borrow, so it cannot alias `a` or `b`. With `read_dst == false` the old
    // contents of `c` are never read. `F` is `f32` or `f64` (the only `Float` implementors), which
    // `gemm::gemm` supports (it panics on other types rather than misbehaving).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            beta != F::zero(),
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use ndarray::linalg::general_mat_mul;
    use ndarray::{Array2, ShapeBuilder, s};

    use super::*;

    /// Deterministic values in [-1, 1) (a tiny LCG; no rand needed).
    fn filled<F: Float>(rows: usize, cols: usize, seed: u64) -> Array2<F> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Array2::from_shape_fn((rows, cols), |_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            F::of((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
    }

    fn check_against_ndarray(m: usize, k: usize, n: usize, ta: bool, tb: bool, alpha: f64, beta: f64) {
        let a: Array2<f64> = if ta { filled(k, m, 1).reversed_axes() } else { filled(m, k, 1) };
        let b: Array2<f64> = if tb { filled(n, k, 2).reversed_axes() } else { filled(k, n, 2) };
        let c0: Array2<f64> = filled(m, n, 3);
        let mut want = c0.clone();
        general_mat_mul(alpha, &a, &b, beta, &mut want);
        let mut got = c0.clone();
        gemm(alpha, a.view(), b.view(), beta, got.view_mut());
        let err = (&got - &want).iter().fold(0.0f64, |e, x| e.max(x.abs()));
        assert!(err < 1e-12 * (k as f64 + 1.0), "({m}x{k})·({k}x{n}) ta={ta} tb={tb}: max error {err}");
    }

    #[test]
    fn agrees_with_ndarray_general_mat_mul() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 2), (17, 33, 9), (64, 32, 64), (130, 70, 257), (1, 40, 300)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check_against_ndarray(m, k, n, ta, tb, 1.0, 0.0);
                check_against_ndarray(m, k, n, ta, tb, 0.5, 1.0);
                check_against_ndarray(m, k, n, ta, tb, -2.0, 0.25);
            }
        }
    }

    #[test]
    fn strided_views_and_f32() {
        let a: Array2<f32> = filled(40, 60, 4);
        let b: Array2<f32> = filled(60, 50, 5);
        // Every other row of a, a column window of b, and c written in column-major memory.
        let (av, bv) = (a.slice(s![..;2, ..]), b.slice(s![.., 5..45]));
        let mut want = Array2::<f32>::zeros((20, 40));
        general_mat_mul(1.0, &av, &bv, 0.0, &mut want);
        let mut got = Array2::<f32>::from_elem((20, 40).f(), f32::NAN);
        gemm(1.0, av, bv, 0.0, got.view_mut());
        let err = (&got - &want).iter().fold(0.0f32, |e, x| e.max(x.abs()));
        assert!(err < 1e-4, "max error {err}");
    }

    #[test]
    fn empty_inner_dimension_scales_c() {
        let a = Array2::<f64>::zeros((3, 0));
        let b = Array2::<f64>::zeros((0, 2));
        let mut c = Array2::<f64>::from_elem((3, 2), 4.0);
        gemm(1.0, a.view(), b.view(), 0.5, c.view_mut());
        assert!(c.iter().all(|&x| x == 2.0));
        gemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert!(c.iter().all(|&x| x == 0.0));
    }

    #[test]
    #[should_panic(expected = "gemm: shapes")]
    fn mismatched_shapes_panic() {
        let a = Array2::<f64>::zeros((3, 4));
        let b = Array2::<f64>::zeros((5, 2));
        let mut c = Array2::<f64>::zeros((3, 2));
        gemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
    }

    /// Runs `gemm` inside a rayon pool of `threads` threads.
    fn in_pool<F: Float>(threads: usize, a: &Array2<F>, b: &Array2<F>, ta: bool, tb: bool) -> Array2<F> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
        pool.install(|| {
            let av = if ta { a.t() } else { a.view() };
            let bv = if tb { b.t() } else { b.view() };
            let mut c = Array2::<F>::from_elem((av.nrows(), bv.ncols()), F::one());
            gemm(F::one(), av, bv, F::one(), c.view_mut());
            c
        })
    }

    fn bits_equal_across_threads<F: Float>() {
        // Big enough that gemm really splits the work across threads, with ragged edges.
        for &(m, k, n) in &[(512, 300, 257), (1000, 1100, 130), (64, 2048, 700)] {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                let a: Array2<F> = if ta { filled(k, m, 7) } else { filled(m, k, 7) };
                let b: Array2<F> = if tb { filled(n, k, 8) } else { filled(k, n, 8) };
                let one = in_pool(1, &a, &b, ta, tb);
                let two = in_pool(2, &a, &b, ta, tb);
                assert!(
                    one.iter()
                        .zip(two.iter())
                        .all(|(&x, &y)| Float::to_f64(x).to_bits() == Float::to_f64(y).to_bits()),
                    "({m}x{k})·({k}x{n}) ta={ta} tb={tb}: 1 and 2 threads differ"
                );
            }
        }
    }

    #[test]
    fn bit_identical_with_one_and_two_threads_f32() {
        bits_equal_across_threads::<f32>();
    }

    #[test]
    fn bit_identical_with_one_and_two_threads_f64() {
        bits_equal_across_threads::<f64>();
    }

    #[test]
    fn serial_and_threaded_agree_bitwise() {
        let a: Array2<f32> = filled(700, 513, 9);
        let b: Array2<f32> = filled(513, 300, 10);
        let mut c1 = Array2::<f32>::zeros((700, 300));
        let mut c2 = Array2::<f32>::zeros((700, 300));
        gemm_serial(1.0, a.view(), b.view(), 0.0, c1.view_mut());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| gemm(1.0, a.view(), b.view(), 0.0, c2.view_mut()));
        assert!(c1.iter().zip(c2.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
