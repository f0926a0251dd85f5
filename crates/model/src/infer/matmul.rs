//! The decode kernels' matrix product `y = x·W + b`, W read from its packed strips (see
//! `packed`): the blocks' linear layers, and the tied head `logits = x·Eᵀ` with Eᵀ packed as a
//! `C x vocab` weight without bias.
//!
//! Batch independence: every output element is one fixed sequence of floating-point operations
//! that depends only on its own row of `x` and the weights, never on how many rows are computed
//! together, which rows share a register tile, or which thread runs it. The tiles below differ in
//! how many elements they compute at once, not in how each element is computed.
//!
//! A call split by rows (see `split`) runs each product on one thread. Otherwise a large product
//! splits its *output columns* (the weight matrix's columns), so each of the two cores streams half
//! of the weights once per step: at batch 1 the product is bound by reading the weights, and
//! splitting rows would make both cores read all of them. Each task writes its columns for every
//! row into its own contiguous tile, `[rows][width]`; [`scatter`] then moves the tiles into
//! row-major order.

use pglm_autograd::Float;
use rayon::prelude::*;

use super::packed::Panels;

/// Columns of one register tile of the linear kernel: 32 f32 are four AVX2 registers.
pub(crate) const COLS: usize = 32;

/// Rows of one register tile, each weight vector loaded once serves them all: 32 columns are two
/// AVX-512 registers or four AVX2 ones, so 8 or 4 rows make 16 accumulator registers of the 32
/// or 16 the CPU has.
pub(crate) const ROWS: usize = if cfg!(target_feature = "avx512f") { 8 } else { 4 };

/// Multiply-adds below which a product runs on the calling thread (a rayon fan-out costs a few
/// microseconds; 2^16 multiply-adds take about as long on one core).
const PAR_WORK: usize = 1 << 16;

/// Output columns per parallel task of a product `n` columns wide: one task per thread, in whole
/// register tiles, so that each thread reads the longest contiguous runs of each weight row.
pub(crate) fn task_width(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads()).div_ceil(COLS).max(1) * COLS
}

/// out[r, :] = bias + x[r, :]·w for the rows of `x` (`k` wide), with `w` and `bias` packed in
/// `p` (`k x n`). With `par`, a large product splits its columns over the pool's threads, each
/// task writing its columns of every row into `tiles` (scratch of at least `rows * n`), which are
/// then moved into `out`; otherwise `out` is written directly. `epilogue` runs on each finished
/// block of columns (inside its task), e.g. an activation.
///
/// Each element: `acc = bias[j]; for i in 0..k { acc = fma(x[r, i], w[i, j], acc) }`.
pub(crate) fn linear<F: Float>(
    x: &[F],
    p: &Panels<F>,
    tiles: &mut [F],
    out: &mut [F],
    epilogue: impl Fn(&mut [F]) + Sync,
    par: bool,
) {
    let (k, n) = (p.k, p.n);
    let rows = x.len() / k;
    assert!(
        x.len() == rows * k && out.len() == rows * n,
        "linear: x {} (k {k}), out {} (n {n})",
        x.len(),
        out.len()
    );
    if !(par && rows * k * n >= PAR_WORK && rayon::current_num_threads() > 1) {
        // One task of all the columns: its tile is `out` itself, row-major.
        linear_cols(x, p, (0, n), out);
        epilogue(out);
        return;
    }
    let width = task_width(n);
    let tiles = &mut tiles[..rows * n];
    tiles.par_chunks_mut(rows * width).enumerate().for_each(|(t, tile)| {
        let j0 = t * width;
        linear_cols(x, p, (j0, width.min(n - j0)), tile);
        epilogue(tile);
    });
    scatter(tiles, rows, n, width, out);
}

/// Moves column tiles `[task][rows][width]` (the last task possibly narrower) into row-major
/// `out` (`rows x n`).
pub(crate) fn scatter<F: Float>(tiles: &[F], rows: usize, n: usize, width: usize, out: &mut [F]) {
    if rows == 1 || width >= n {
        out.copy_from_slice(&tiles[..rows * n]);
        return;
    }
    for (t, tile) in tiles[..rows * n].chunks(rows * width).enumerate() {
        let (j0, wd) = (t * width, width.min(n - t * width));
        for (r, src) in tile.chunks(wd).enumerate() {
            out[r * n + j0..r * n + j0 + wd].copy_from_slice(src);
        }
    }
}

/// Columns `j0..j0 + wd` (`j0` a multiple of [`COLS`]) of every row, into `tile` (`[rows][wd]`):
/// strip by strip, [`ROWS`] rows per register tile, then the rows left over one at a time.
fn linear_cols<F: Float>(x: &[F], p: &Panels<F>, (j0, wd): (usize, usize), tile: &mut [F]) {
    let k = p.k;
    let rows = x.len() / k;
    let grouped = rows / ROWS * ROWS;
    for jt in (0..wd).step_by(COLS) {
        let (panel, bias) = p.strip((j0 + jt) / COLS);
        let cw = COLS.min(wd - jt);
        if cw < COLS {
            // A strip cut short by the end of the matrix: one column at a time.
            for r in 0..rows {
                for c in 0..cw {
                    let mut acc = bias[c];
                    for (i, &xi) in x[r * k..(r + 1) * k].iter().enumerate() {
                        acc = xi.mul_add(panel[i * COLS + c], acc);
                    }
                    tile[r * wd + jt + c] = acc;
                }
            }
            continue;
        }
        let bias: &[F; COLS] = bias.try_into().expect("a strip's bias");
        for r in (0..grouped).step_by(ROWS) {
            tile_rows(&x[r * k..], k, panel, bias, &mut tile[r * wd + jt..], wd);
        }
        for r in grouped..rows {
            tile_1x32(&x[r * k..(r + 1) * k], panel, bias, &mut tile[r * wd + jt..r * wd + jt + COLS]);
        }
    }
}

/// [`ROWS`] rows x [`COLS`] columns over one whole strip: the accumulators start at the bias,
/// stay in registers while the strip's `k` weight rows stream past, and are stored into `out`
/// (row stride `ld`). Row `g` of `x` starts at `x[g * k]`.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn tile_rows<F: Float>(x: &[F], k: usize, panel: &[F], bias: &[F; COLS], out: &mut [F], ld: usize) {
    let mut acc = [*bias; ROWS];
    let xr: [&[F]; ROWS] = std::array::from_fn(|g| &x[g * k..(g + 1) * k]);
    for (i, wr) in panel.chunks_exact(COLS).enumerate().take(k) {
        let wr: &[F; COLS] = wr.try_into().expect("panel row");
        for (a, xg) in acc.iter_mut().zip(&xr) {
            let xi = xg[i];
            for c in 0..COLS {
                a[c] = xi.mul_add(wr[c], a[c]);
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        out[g * ld..g * ld + COLS].copy_from_slice(a);
    }
}

/// One row x [`COLS`] columns over one whole strip (batch 1: the weights stream through four
/// accumulator registers, read once, front to back).
#[inline(never)]
fn tile_1x32<F: Float>(x: &[F], panel: &[F], bias: &[F; COLS], out: &mut [F]) {
    let mut acc = *bias;
    for (&xi, wr) in x.iter().zip(panel.chunks_exact(COLS)) {
        let wr: &[F; COLS] = wr.try_into().expect("panel row");
        for c in 0..COLS {
            acc[c] = xi.mul_add(wr[c], acc[c]);
        }
    }
    out.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn run_linear(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let rows = x.len() / k;
        let mut out = vec![0.0; rows * n];
        let mut tiles = vec![0.0; rows * n];
        linear(x, &Panels::of(w, Some(b), k, n), &mut tiles, &mut out, |_| {}, true);
        out
    }

    #[test]
    fn infer_linear_matches_f64_and_each_row_is_the_same_bits_alone() {
        for (k, n) in [(48, 144), (64, 32), (37, 100), (256, 768), (150, 64)] {
            let rows = 11;
            let (x, w, b) = (filled(rows * k, 1), filled(k * n, 2), filled(n, 3));
            let all = run_linear(&x, &w, &b, k, n);
            for r in 0..rows {
                let alone = run_linear(&x[r * k..(r + 1) * k], &w, &b, k, n);
                assert_eq!(&all[r * n..(r + 1) * n], &alone[..], "k {k} n {n} row {r}: bits differ");
                for j in 0..n {
                    let exact: f64 =
                        b[j] as f64 + (0..k).map(|i| x[r * k + i] as f64 * w[i * n + j] as f64).sum::<f64>();
                    assert!((all[r * n + j] as f64 - exact).abs() < 1e-4, "k {k} n {n} ({r}, {j})");
                }
            }
        }
    }

    #[test]
    fn infer_linear_does_not_depend_on_the_thread_count() {
        let (k, n, rows) = (256, 1024, 16);
        let (x, w, b) = (filled(rows * k, 4), filled(k * n, 5), filled(n, 6));
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(
            one.install(|| run_linear(&x, &w, &b, k, n)),
            three.install(|| run_linear(&x, &w, &b, k, n))
        );
    }
}
