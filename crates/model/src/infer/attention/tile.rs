//! Attention of several consecutive rows of one slot at once, one head at a time: what scoring a
//! completion runs (its rows are one slot's consecutive positions), where [`super::head`] would
//! read the same keys and values once per row.
//!
//! A tile of `G` rows at positions `t0 - 1, .., t0 + G - 2` (they see `t0 .. t0 + G - 1` keys)
//! reads each key and value once for all of its rows, and its rows' independent chains of fmas
//! run side by side. Every row's values are those of [`super::head`] bit for bit:
//! - a score is the same chain of fmas over the head's dimensions (split by parity in a last
//!   block of at most 32 positions), and the rows of a tile compute the same blocks the same way
//!   ([`fits`]), the shorter rows' extra scores discarded;
//! - a row's probabilities past its own `t` are set to exactly zero, so in `Σ_p a_p v_p` the
//!   extra terms are `fma(0, v, acc) = acc`: the sum starts at +0 and never becomes −0, so adding
//!   ±0 changes no bit (the values are finite).

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::softmax_row_in_place;

use super::{KEY_BLOCK, SCORE_BLOCK, key_block};

/// Rows per tile.
pub(super) const G: usize = 4;

/// Whether rows seeing `t0` to `t0 + G - 1` keys can share a tile: all in one half of a block of
/// 64 positions, so that they compute the same blocks of scores the same way (a row's last block
/// is split by parity when it holds at most 32 positions).
pub(super) fn fits(t0: usize) -> bool {
    (t0 - 1) / (SCORE_BLOCK / 2) == (t0 + G - 2) / (SCORE_BLOCK / 2)
}

/// One head of the tile's `G` rows: `q[g]` is row `g`'s query, which sees `t0 + g` keys; `sc[g]`
/// has room for the head's stored positions; writes `out[g]`.
pub(super) fn head<F: Float>(
    q: [&[F]; G],
    (keys_t, values): (&[F], &[F]),
    t0: usize,
    scale: F,
    sc: [&mut [F]; G],
    out: [&mut [F]; G],
) {
    let hs = q[0].len();
    let t_end = t0 + G - 1;
    let mut sc = sc;
    // Scores, 16 positions at a time: the blocks a row of [`super::head`] computes, in the same
    // way (split by parity when its last block of 64 holds at most 32 positions).
    for p in (0..t_end).step_by(SCORE_BLOCK) {
        let blocks = (t_end - p).div_ceil(KEY_BLOCK).min(SCORE_BLOCK / KEY_BLOCK);
        let split = blocks <= 2;
        for b in 0..blocks {
            let at = p + b * KEY_BLOCK;
            let keys = &keys_t[key_block(at, hs)..][..hs * KEY_BLOCK];
            let o = sc.each_mut().map(|s| &mut s[at..at + KEY_BLOCK]);
            // s[g][j] = Σ_i q[g][i] · keys[i][j]: the weighted sum of the block's rows of keys.
            if split {
                weighted_sum_split::<F, KEY_BLOCK>(q, keys, KEY_BLOCK, 0, o)
            } else {
                weighted_sum::<F, KEY_BLOCK>(q, keys, KEY_BLOCK, 0, o)
            }
        }
    }
    for (g, s) in sc.iter_mut().enumerate() {
        let t = t0 + g;
        let row = &mut s[..t];
        row.iter_mut().for_each(|x| *x *= scale);
        softmax_row_in_place(row);
        s[t..t_end].fill(F::zero());
    }
    let a: [&[F]; G] = sc.map(|s| &s[..t_end]);
    let values = &values[..t_end * hs];
    // Columns in blocks of 16 (wider tiles spill their accumulators), each column summed as
    // [`super::head`] sums it: one chain over the leading multiple of 64 columns, then split by
    // parity, and one chain for each column past the last whole block of 16.
    let mut out = out;
    let single = hs / 64 * 64;
    for d in (0..hs / 16 * 16).step_by(16) {
        let o = out.each_mut().map(|o| &mut o[d..d + 16]);
        if d < single {
            weighted_sum::<F, 16>(a, values, hs, d, o);
        } else {
            weighted_sum_split::<F, 16>(a, values, hs, d, o);
        }
    }
    for d in hs / 16 * 16..hs {
        weighted_sum::<F, 1>(a, values, hs, d, out.each_mut().map(|o| &mut o[d..d + 1]));
    }
}

/// `out[g][j] = Σ_p a[g][p] · m[p, d0 + j]` for `B` columns of `m` (rows of `stride` values),
/// one fma per p in order.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn weighted_sum<F: Float, const B: usize>(
    a: [&[F]; G],
    m: &[F],
    stride: usize,
    d0: usize,
    out: [&mut [F]; G],
) {
    let mut acc = [[F::zero(); B]; G];
    for (p, mr) in m.chunks_exact(stride).enumerate() {
        add_row(&mut acc, a, p, &mr[d0..d0 + B]);
    }
    for (o, acc) in out.into_iter().zip(&acc) {
        o.copy_from_slice(acc);
    }
}

/// [`weighted_sum`] with the even and the odd p summed apart, then added.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn weighted_sum_split<F: Float, const B: usize>(
    a: [&[F]; G],
    m: &[F],
    stride: usize,
    d0: usize,
    out: [&mut [F]; G],
) {
    let (mut even, mut odd) = ([[F::zero(); B]; G], [[F::zero(); B]; G]);
    let mut rows = m.chunks_exact(stride).enumerate();
    while let Some((p, m0)) = rows.next() {
        add_row(&mut even, a, p, &m0[d0..d0 + B]);
        let Some((p, m1)) = rows.next() else { break };
        add_row(&mut odd, a, p, &m1[d0..d0 + B]);
    }
    for (g, o) in out.into_iter().enumerate() {
        for j in 0..B {
            o[j] = even[g][j] + odd[g][j];
        }
    }
}

/// One step of the weighted sums: `acc[g][j] = fma(a[g][p], v[j], acc[g][j])` for every row `g`
/// of the tile and column `j` of the block `v` (`B` values of row `p`).
#[inline(always)]
fn add_row<F: Float, const B: usize>(acc: &mut [[F; B]; G], a: [&[F]; G], p: usize, v: &[F]) {
    let v: &[F; B] = v.try_into().expect("column block");
    let ap: [F; G] = std::array::from_fn(|g| a[g][p]);
    for g in 0..G {
        for j in 0..B {
            acc[g][j] = ap[g].mul_add(v[j], acc[g][j]);
        }
    }
}
