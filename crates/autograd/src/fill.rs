//! Fresh buffers filled by the pool's threads.
//!
//! The tape allocates every activation and gradient afresh, and safe Rust hands out initialised
//! memory only: a buffer is zeroed (or filled) before an op writes it. Done by `calloc`'s
//! `memset` on the calling thread, a training loop's thread outside the pool, a fill of a few MB
//! leaves the pool idle meanwhile: in a GRPO update at config S these serial fills were about 5%
//! of all samples, with the other core waiting. Large fills here run in parallel chunks instead,
//! and a caller already on the pool's threads (the RL update) splits fills 16 times smaller.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::Float;

/// Elements below which a fill stays on the calling thread. A parallel call from a thread outside
/// the pool costs a hand-over of 10-20 µs, more than a `memset` of a few hundred KB: with a
/// threshold of 2^16 elements config S's training step (`cargo xtask bench --filter "train
/// step"`) ran 7-10% slower; at 2^20 (4 MB of f32) it is unchanged within the noise, and config M
/// and L's steps unchanged or faster.
const PAR_FILL: usize = 1 << 20;

/// [`PAR_FILL`] for a caller already on one of the pool's threads (the RL update runs there),
/// where a fork-join costs about 2 µs: a `memset` of 256 KB takes longer than that.
const PAR_FILL_IN_POOL: usize = 1 << 16;

/// Whether a fill of `n` elements runs on the pool's threads.
fn par_fill(n: usize) -> bool {
    let min = if rayon::current_thread_index().is_some() { PAR_FILL_IN_POOL } else { PAR_FILL };
    n >= min && rayon::current_num_threads() > 1
}

/// Elements of one parallel task of a fill (whole rows in [`repeat_row`]).
const CHUNK: usize = 1 << 14;

/// `n` zeros.
pub(crate) fn zero_vec<F: Float>(n: usize) -> Vec<F> {
    if !par_fill(n) {
        return vec![F::zero(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(F::zero(), n).with_min_len(CHUNK));
    v
}

/// A zero array of `shape`.
pub(crate) fn zeros<F: Float>(shape: &[usize]) -> ArrayD<F> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), zero_vec(n)).expect("length matches shape")
}

/// `row` repeated `rows` times, back to back (a bias broadcast over the rows of a product).
pub(crate) fn repeat_row<F: Float>(row: &[F], rows: usize) -> Vec<F> {
    let c = row.len();
    if !par_fill(rows * c) {
        return row.repeat(rows); // one pass, no zeroing first
    }
    let mut v = zero_vec(rows * c);
    if let Some(per_task) = CHUNK.checked_div(c) {
        v.par_chunks_mut(c).with_min_len(per_task.max(1)).for_each(|r| r.copy_from_slice(row));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes on both sides of both thresholds.
    const SIZES: [usize; 8] =
        [0, 1, 17, PAR_FILL_IN_POOL - 1, PAR_FILL_IN_POOL, PAR_FILL - 1, PAR_FILL, 3 * PAR_FILL + 5];

    #[test]
    fn fills_are_exact_at_every_size() {
        for n in SIZES {
            assert!(zero_vec::<f32>(n).iter().all(|&x| x == 0.0) && zero_vec::<f64>(n).len() == n);
        }
        assert_eq!(zeros::<f64>(&[2, 3, 4]).shape(), &[2, 3, 4]);
        let row = [1.0f32, -2.0, 3.5];
        for rows in [0, 1, 5, PAR_FILL] {
            let v = repeat_row(&row, rows);
            assert_eq!(v.len(), rows * 3);
            assert!(v.chunks(3).all(|r| r == row));
        }
        assert!(repeat_row::<f32>(&[], 7).is_empty());
    }

    #[test]
    fn fills_made_on_the_pools_threads_are_exact() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        pool.install(|| {
            assert!(rayon::current_thread_index().is_some());
            for n in SIZES {
                let zeros = zero_vec::<f32>(n);
                assert!(zeros.len() == n && zeros.iter().all(|&x| x == 0.0));
                let row = [0.5f32, -1.0];
                let v = repeat_row(&row, n / 2 + 1);
                assert!(v.len() == 2 * (n / 2 + 1) && v.chunks(2).all(|r| r == row));
            }
        });
    }
}
