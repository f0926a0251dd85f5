//! Causal attention of new rows over the KV cache.

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::softmax_row_in_place;
use rayon::prelude::*;

use super::Slots;

mod tile;

/// Multiply-adds (q·k plus a·v over all rows and heads) below which attention stays on the
/// calling thread.
const PAR_WORK: usize = 1 << 16;

/// Positions per block of attention scores: at most 64 accumulators, four registers of f32.
const SCORE_BLOCK: usize = 64;

/// Positions per block of a head's keys. A block stores its positions' keys transposed,
/// `hs x 16` (one register of f32 per dimension), so that a query that sees `t` keys reads
/// `ceil(t / 16)` contiguous blocks: decoding is bound by reading the cache, and a layout of
/// whole transposed rows (`hs x stride`) had a query read `hs` rows of 32 or 64 positions.
pub(crate) const KEY_BLOCK: usize = 16;

/// Where the block holding position `p` starts in a head's keys.
#[inline]
pub(crate) fn key_block(p: usize, hs: usize) -> usize {
    p / KEY_BLOCK * hs * KEY_BLOCK
}

/// Positions stored per head for a cache of `capacity`: whole key blocks, so that every block of
/// scores a query computes lies inside its head's keys.
pub(crate) fn score_stride(capacity: usize) -> usize {
    capacity.div_ceil(KEY_BLOCK).max(1) * KEY_BLOCK
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
    let hs = cache.head_dim;
    for (r, &(slot, _)) in rows.iter().enumerate() {
        let row = &qkv[r * 3 * c..(r + 1) * 3 * c];
        for h in 0..cache.n_head {
            let base = cache.head_base(layer, slot, h);
            let key = &row[c + h * hs..c + (h + 1) * hs];
            let at = base + key_block(pos[r], hs) + pos[r] % KEY_BLOCK;
            for (i, &ki) in key.iter().enumerate() {
                cache.k[at + i * KEY_BLOCK] = ki;
            }
            let o = base + pos[r] * hs;
            cache.v[o..o + hs].copy_from_slice(&row[2 * c + h * hs..2 * c + (h + 1) * hs]);
        }
    }
}

/// Each row's query attends over its slot's keys at positions 0..=pos:
/// `att = softmax(q·Kᵀ / sqrt(hs)) · V`, heads side by side (GPT-2's merge). `scores` holds at
/// least `rows · n_head · t_max` entries, `t_max` the cache's stride (see [`score_stride`]).
/// With `par`, large calls split the (row, head) pairs over the pool's threads; on one thread,
/// runs of one slot's consecutive positions (a scored completion) go through [`tile`], which
/// reads each key and value once for several rows, with the same bits.
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
    let head_of = |r: usize, h: usize| {
        let base = cache.head_base(layer, rows[r].0, h);
        (&cache.k[base..base + hs * t_max], &cache.v[base..base + hs * t_max])
    };
    let query = |r: usize, h: usize| &qkv[r * 3 * c + h * hs..][..hs];
    let work = |(i, (out, sc)): (usize, (&mut [F], &mut [F]))| {
        let (r, h) = (i / nh, i % nh);
        let (keys_t, values) = head_of(r, h);
        head(query(r, h), keys_t, values, pos[r] + 1, scale, sc, out);
    };
    let n = rows.len() * nh;
    let total: usize = pos.iter().map(|&p| 2 * (p + 1) * c).sum();
    if par && total >= PAR_WORK && rayon::current_num_threads() > 1 {
        att[..n * hs]
            .par_chunks_mut(hs)
            .zip(scores[..n * t_max].par_chunks_mut(t_max))
            .enumerate()
            .with_min_len(4)
            .for_each(work);
        return;
    }
    let (att, scores) = (&mut att[..n * hs], &mut scores[..n * t_max]);
    let mut r = 0;
    while r < rows.len() {
        let t0 = pos[r] + 1;
        let tiled = r + tile::G <= rows.len()
            && tile::fits(t0)
            && (0..tile::G).all(|g| rows[r + g].0 == rows[r].0 && pos[r + g] == pos[r] + g);
        if tiled {
            for h in 0..nh {
                let q = std::array::from_fn(|g| query(r + g, h));
                let mut sc_rows = scores[r * nh * t_max..(r + tile::G) * nh * t_max]
                    .chunks_exact_mut(t_max)
                    .skip(h)
                    .step_by(nh);
                let sc = std::array::from_fn(|_| sc_rows.next().expect("a row's scores"));
                let mut out_rows =
                    att[r * nh * hs..(r + tile::G) * nh * hs].chunks_exact_mut(hs).skip(h).step_by(nh);
                let out = std::array::from_fn(|_| out_rows.next().expect("a row's output"));
                tile::head(q, head_of(r, h), t0, scale, sc, out);
            }
            r += tile::G;
        } else {
            for h in 0..nh {
                let i = r * nh + h;
                work((i, (&mut att[i * hs..(i + 1) * hs], &mut scores[i * t_max..(i + 1) * t_max])));
            }
            r += 1;
        }
    }
}

/// One head of one row over its first `t` positions: `s_p = (q·k_p) · scale`,
/// `a = softmax(s)`, `out = Σ_p a_p v_p`. `keys_t` is the head's keys in blocks of
/// [`KEY_BLOCK`] positions, `values` its values, `sc` has room for `t_max` scores.
#[inline]
fn head<F: Float>(q: &[F], keys_t: &[F], values: &[F], t: usize, scale: F, sc: &mut [F], out: &mut [F]) {
    let hs = q.len();
    // s = q·Kᵀ, a block of 64 positions at a time: each s_p is `fma(q_i, k_p[i], ·)` over i in
    // order, the block's accumulators in registers, one register per 16 positions. The last
    // block covers only the blocks of 16 keys that `t` reaches (its extra scores are never read).
    // Over at most 32 positions (one or two registers) its sum over i is split by the parity of
    // i, so that it still runs two or four independent chains of fmas; over 48 or 64 it runs
    // three or four.
    for p in (0..t).step_by(SCORE_BLOCK) {
        let keys = &keys_t[key_block(p, hs)..];
        let out = &mut sc[p..];
        match (t - p).div_ceil(KEY_BLOCK) {
            1 => scores_split::<F, 1>(q, keys, out),
            2 => scores_split::<F, 2>(q, keys, out),
            3 => scores_block::<F, 3>(q, keys, out),
            _ => scores_block::<F, 4>(q, keys, out),
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

/// Scores against the `NB` key blocks (see [`KEY_BLOCK`]) that start at `keys`:
/// `out[16 b + j] = Σ_i q[i] · keys[b][i][j]`, one fma per `i` in order.
#[inline(always)]
fn scores_block<F: Float, const NB: usize>(q: &[F], keys: &[F], out: &mut [F]) {
    let hs = q.len();
    let mut acc = [[F::zero(); KEY_BLOCK]; NB];
    for (i, &qi) in q.iter().enumerate() {
        for (b, acc) in acc.iter_mut().enumerate() {
            let k = key_row(keys, hs, b, i);
            for j in 0..KEY_BLOCK {
                acc[j] = qi.mul_add(k[j], acc[j]);
            }
        }
    }
    for (o, acc) in out.chunks_exact_mut(KEY_BLOCK).zip(&acc) {
        o.copy_from_slice(acc);
    }
}

/// [`scores_block`] with the even and the odd `i` summed apart, then added.
#[inline(always)]
fn scores_split<F: Float, const NB: usize>(q: &[F], keys: &[F], out: &mut [F]) {
    let hs = q.len();
    let (mut even, mut odd) = ([[F::zero(); KEY_BLOCK]; NB], [[F::zero(); KEY_BLOCK]; NB]);
    for i in (0..hs).step_by(2) {
        for (b, acc) in even.iter_mut().enumerate() {
            let k = key_row(keys, hs, b, i);
            for j in 0..KEY_BLOCK {
                acc[j] = q[i].mul_add(k[j], acc[j]);
            }
        }
        if i + 1 < hs {
            for (b, acc) in odd.iter_mut().enumerate() {
                let k = key_row(keys, hs, b, i + 1);
                for j in 0..KEY_BLOCK {
                    acc[j] = q[i + 1].mul_add(k[j], acc[j]);
                }
            }
        }
    }
    for ((o, e), d) in out.chunks_exact_mut(KEY_BLOCK).zip(&even).zip(&odd) {
        for j in 0..KEY_BLOCK {
            o[j] = e[j] + d[j];
        }
    }
}

/// Dimension `i` of the 16 keys in block `b` of `keys` (blocks of `hs x 16`).
#[inline(always)]
fn key_row<F>(keys: &[F], hs: usize, b: usize, i: usize) -> &[F; KEY_BLOCK] {
    keys[(b * hs + i) * KEY_BLOCK..][..KEY_BLOCK].try_into().expect("a key row")
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
