//! The measurement behind the GEMM backend choice: ndarray's `general_mat_mul` (matrixmultiply)
//! against the `gemm` crate (through `pglm_autograd::ops::linalg::gemm`) on 1 and 2 threads, f32,
//! at the model's shapes. Prints GFLOP/s = 2mnk / time (median and best of the runs).
//!
//! ```text
//! cargo bench -p pglm-autograd --bench gemm_backends                 # ndarray's default matrixmultiply
//! MATMUL_NUM_THREADS=2 cargo bench -p pglm-autograd --bench gemm_backends \
//!     --features matrixmultiply-threading                             # matrixmultiply threading + avx512
//! ```

use std::time::{Duration, Instant};

use ndarray::linalg::general_mat_mul;
use ndarray::{Array3, ArrayView2, Axis};
use pglm_autograd::ops::linalg::{gemm, gemm_serial};
use rayon::prelude::*;

/// One product to time: `count` independent `(m, k)·(k, n)` GEMMs, `a`/`b` optionally stored transposed.
struct Shape {
    name: &'static str,
    count: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
}

const SHAPES: &[Shape] = &[
    Shape { name: "X·W   2048x256·256x768", count: 1, m: 2048, k: 256, n: 768, ta: false, tb: false },
    Shape { name: "X·W   2048x1024·1024x256", count: 1, m: 2048, k: 1024, n: 256, ta: false, tb: false },
    Shape { name: "Xᵀ·dY 256x2048·2048x768", count: 1, m: 256, k: 2048, n: 768, ta: true, tb: false },
    Shape { name: "dY·Wᵀ 2048x768·768x256", count: 1, m: 2048, k: 768, n: 256, ta: false, tb: true },
    Shape { name: "Xᵀ·dY 1024x2048·2048x256", count: 1, m: 1024, k: 2048, n: 256, ta: true, tb: false },
    Shape { name: "dY·Wᵀ 2048x256·256x1024", count: 1, m: 2048, k: 256, n: 1024, ta: false, tb: true },
    Shape { name: "128 x Q·Kᵀ 64x32·32x64", count: 128, m: 64, k: 32, n: 64, ta: false, tb: true },
    Shape { name: "64 x Q·Kᵀ 128x64·64x128", count: 64, m: 128, k: 64, n: 128, ta: false, tb: true },
    Shape { name: "64 x P·V 128x128·128x64", count: 64, m: 128, k: 128, n: 64, ta: false, tb: false },
];

fn filled(shape: (usize, usize, usize), seed: u32) -> Array3<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    Array3::from_shape_fn(shape, |_| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    })
}

/// Median and best seconds of `f` over runs filling about `budget` (at least 5 runs, after a warm-up).
fn time(budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn operand(x: &Array3<f32>, i: usize, transposed: bool) -> ArrayView2<'_, f32> {
    let v = x.index_axis(Axis(0), i);
    if transposed { v.reversed_axes() } else { v }
}

fn main() {
    let mm = if cfg!(feature = "matrixmultiply-threading") { "threading+avx512" } else { "default" };
    let mm_threads = std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("ndarray = general_mat_mul on matrixmultiply ({mm}, MATMUL_NUM_THREADS={mm_threads})");
    println!("gemm NT = pglm_autograd::ops::linalg::gemm (gemm 0.19, x86-v4) in a rayon pool of N threads");
    println!(
        "batched shapes: rayon over the batch (global pool, 2 threads), one single-threaded GEMM each\n"
    );
    println!(
        "{:<28} {:>18} {:>18} {:>18}   (GFLOP/s median / best)",
        "shape", "ndarray", "gemm 1T", "gemm 2T"
    );
    let budget = Duration::from_millis(1500);
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for s in SHAPES {
        let a = filled(if s.ta { (s.count, s.k, s.m) } else { (s.count, s.m, s.k) }, 1);
        let b = filled(if s.tb { (s.count, s.n, s.k) } else { (s.count, s.k, s.n) }, 2);
        let mut c = Array3::<f32>::zeros((s.count, s.m, s.n));
        let flops = 2.0 * (s.count * s.m * s.n * s.k) as f64;
        let gf =
            |(med, best): (f64, f64)| format!("{:>7.1} / {:>7.1}", flops / med / 1e9, flops / best / 1e9);
        let nd;
        let (g1, g2);
        if s.count == 1 {
            let (av, bv) = (operand(&a, 0, s.ta), operand(&b, 0, s.tb));
            let mut cv = c.index_axis_mut(Axis(0), 0);
            nd = time(budget, || general_mat_mul(1.0, &av, &bv, 0.0, &mut cv));
            g1 = pool1.install(|| time(budget, || gemm(1.0, av, bv, 0.0, cv.view_mut())));
            g2 = pool2.install(|| time(budget, || gemm(1.0, av, bv, 0.0, cv.view_mut())));
        } else {
            nd = pool2.install(|| {
                time(budget, || {
                    c.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut ci)| {
                        general_mat_mul(1.0, &operand(&a, i, s.ta), &operand(&b, i, s.tb), 0.0, &mut ci)
                    })
                })
            });
            let par_gemm = |c: &mut Array3<f32>| {
                c.axis_iter_mut(Axis(0))
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(i, ci)| gemm_serial(1.0, operand(&a, i, s.ta), operand(&b, i, s.tb), 0.0, ci))
            };
            g1 = pool1.install(|| time(budget, || par_gemm(&mut c)));
            g2 = pool2.install(|| time(budget, || par_gemm(&mut c)));
        }
        println!("{:<28} {:>18} {:>18} {:>18}", s.name, gf(nd), gf(g1), gf(g2));
    }
}
