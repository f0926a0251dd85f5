//! Causal attention of new rows over the KV cache.

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::softmax_row_in_place;
use rayon::prelude::*;

use super::Slots;

/// Multiply-adds (q·k plus a·v over all rows and heads) below which attention stays on the
/// calling thread.
const PAR_WORK: usize = 1 << 16;

/// Positions per block of attention scores: 64 accumulators, four independent chains of fmas.
const SCORE_BLOCK: usize = 64;

/// The width of a last block of scores that needs at most half a block.
const HALF_BLOCK: usize = SCORE_BLOCK / 2;

/// Positions stored per head for a cache of `capacity`: whole score blocks.
pub(crate) fn score_stride(capacity: usize) -> usize {
    capacity.div_ceil(SCORE_BLOCK).max(1) * SCORE_BLOCK
}

/// Copies each row's key and value (from its packed qkv row) into the cache at its position.
pub(crate) fn write_kv<F: Float>(
    cache: &mut Slots<'_, F>,
    layer: usize,
    rows: &[(usize, u32)],
    pos: &[usize],
    qkv: &[F],
    c: usize,
) {
    let (hs, cap) = (cache.head_dim, cache.stride);
    for (r, &(slot, _)) in rows.iter().enumerate() {
        let row = &qkv[r * 3 * c..(r + 1) * 3 * c];
        for h in 0..cache.n_head {
            let base = cache.head_base(layer, slot, h);
            let key = &row[c + h * hs..c + (h + 1) * hs];
            for (i, &ki) in key.iter().enumerate() {
                cache.k[base + i * cap + pos[r]] = ki;
            }
            let o = base + pos[r] * hs;
            cache.v[o..o + hs].copy_from_slice(&row[2 * c + h * hs..2 * c + (h + 1) * hs]);
        }
    }
}

/// Each row's query attends over its slot's keys at positions 0..=pos:
/// `att = softmax(q·Kᵀ / sqrt(hs)) · V`, heads side by side (GPT-2's merge). `scores` holds at
/// least `rows · n_head · t_max` entries, `t_max` the cache's stride (see [`score_stride`]).
/// With `par`, large calls split the (row, head) pairs over the pool's threads.
#[allow(clippy::too_many_arguments)] // the buffers of one step, named as in `forward_rows`
pub(crate) fn attend<F: Float>(
    cache: &Slots<'_, F>,
    layer: usize,
    rows: &[(usize, u32)],
    pos: &[usize],
    qkv: &[F],
    att: &mut [F],
    scores: &mut [F],
    par: bool,
) {
    let (nh, hs) = (cache.n_head, cache.head_dim);
    let c = nh * hs;
    let t_max = cache.stride;
    let scale = F::of(1.0 / (hs as f64).sqrt());
    let work = |(i, (out, sc)): (usize, (&mut [F], &mut [F]))| {
        let (r, h) = (i / nh, i % nh);
        let q = &qkv[r * 3 * c + h * hs..][..hs];
        let base = cache.head_base(layer, rows[r].0, h);
        let (keys_t, values) = (&cache.k[base..base + hs * t_max], &cache.v[base..base + hs * t_max]);
        head(q, keys_t, values, pos[r] + 1, scale, sc, out);
    };
    let n = rows.len() * nh;
    let items = att[..n * hs].chunks_mut(hs).zip(scores[..n * t_max].chunks_mut(t_max));
    let total: usize = pos.iter().map(|&p| 2 * (p + 1) * c).sum();
    if par && total >= PAR_WORK && rayon::current_num_threads() > 1 {
        att[..n * hs]
            .par_chunks_mut(hs)
            .zip(scores[..n * t_max].par_chunks_mut(t_max))
            .enumerate()
            .with_min_len(4)
            .for_each(work);
    } else {
        items.enumerate().for_each(work);
    }
}

/// One head of one row over its first `t` positions: `s_p = (q·k_p) · scale`,
/// `a = softmax(s)`, `out = Σ_p a_p v_p`. `keys_t` is the head's keys transposed
/// (`hs x t_max`, `t_max` a multiple of [`SCORE_BLOCK`]), `sc` has room for `t_max` scores.
#[inline]
fn head<F: Float>(q: &[F], keys_t: &[F], values: &[F], t: usize, scale: F, sc: &mut [F], out: &mut [F]) {
    let (hs, t_max) = (q.len(), sc.len());
    // s = q·Kᵀ, a block of positions at a time: each s_p is `fma(q_i, k_p[i], ·)` over i in
    // order, the block's 64 accumulators in registers: four independent chains of fmas. (Blocks
    // cut to the rest of `t`, one chain per 16 positions, read fewer cache lines of short rows
    // but ran slower: the chains wait on the fma's latency.) The last block may run past `t`,
    // never past the head's stored positions; its extra scores are never read.
    // A last block of at most 32 positions is 32 wide, its sum over i split by the parity of i:
    // four chains again, over half the width.
    for p in (0..t).step_by(SCORE_BLOCK) {
        if t - p <= HALF_BLOCK {
            weighted_sum_split::<F, HALF_BLOCK>(q, keys_t, t_max, p, &mut sc[p..p + HALF_BLOCK]);
        } else {
            weighted_sum::<F, SCORE_BLOCK>(q, keys_t, t_max, p, &mut sc[p..p + SCORE_BLOCK]);
        }
    }
    let sc = &mut sc[..t];
    sc.iter_mut().for_each(|s| *s *= scale);
    softmax_row_in_place(sc);
    // out = Σ_p a_p v_p, in column blocks whose accumulators stay in registers across p
    // (accumulating in memory would chain every step through a store and a load).
    let values = &values[..t * hs];
    let mut d = 0;
    while d + 64 <= hs {
        weighted_sum::<F, 64>(sc, values, hs, d, &mut out[d..d + 64]);
        d += 64;
    }
    // Narrower blocks split the sum over p by parity, for more independent chains.
    while d + 32 <= hs {
        weighted_sum_split::<F, 32>(sc, values, hs, d, &mut out[d..d + 32]);
        d += 32;
    }
    while d + 16 <= hs {
        weighted_sum_split::<F, 16>(sc, values, hs, d, &mut out[d..d + 16]);
        d += 16;
    }
    for d in d..hs {
        weighted_sum::<F, 1>(sc, values, hs, d, &mut out[d..d + 1]);
    }
}

/// [`weighted_sum`] with the even and the odd p summed apart, then added:
/// `out[j] = Σ_{p even} a[p] m[p, d0 + j] + Σ_{p odd} a[p] m[p, d0 + j]`, each sum in order.
#[inline(always)]
fn weighted_sum_split<F: Float, const B: usize>(a: &[F], m: &[F], stride: usize, d0: usize, out: &mut [F]) {
    let (mut even, mut odd) = ([F::zero(); B], [F::zero(); B]);
    let mut rows = a.iter().zip(m.chunks_exact(stride));
    while let Some((&a0, m0)) = rows.next() {
        let v: &[F; B] = m0[d0..d0 + B].try_into().expect("column block");
        for j in 0..B {
            even[j] = a0.mul_add(v[j], even[j]);
        }
        let Some((&a1, m1)) = rows.next() else { break };
        let v: &[F; B] = m1[d0..d0 + B].try_into().expect("column block");
        for j in 0..B {
            odd[j] = a1.mul_add(v[j], odd[j]);
        }
    }
    for j in 0..B {
        out[j] = even[j] + odd[j];
    }
}

/// out[j] = Σ_p a[p] · m[p, d0 + j] for `B` columns of `m` (rows of `stride` values), one fma
/// per p in order.
#[inline(always)]
fn weighted_sum<F: Float, const B: usize>(a: &[F], m: &[F], stride: usize, d0: usize, out: &mut [F]) {
    let mut acc = [F::zero(); B];
    for (&ap, mr) in a.iter().zip(m.chunks_exact(stride)) {
        let v: &[F; B] = mr[d0..d0 + B].try_into().expect("column block");
        for j in 0..B {
            acc[j] = ap.mul_add(v[j], acc[j]);
        }
    }
    out.copy_from_slice(&acc);
}
