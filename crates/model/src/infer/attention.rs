//! Causal attention of new rows over the KV cache.

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::softmax_row_in_place;
use rayon::prelude::*;

use super::KvCache;
use super::matmul::dots;

/// Multiply-adds (q·k plus a·v over all rows and heads) below which attention stays on the
/// calling thread.
const PAR_WORK: usize = 1 << 16;

/// Copies each row's key and value (from its packed qkv row) into the cache at its position.
pub(crate) fn write_kv<F: Float>(
    cache: &mut KvCache<F>,
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
            let o = cache.offset(layer, slot, h, pos[r]);
            cache.k[o..o + hs].copy_from_slice(&row[c + h * hs..c + (h + 1) * hs]);
            cache.v[o..o + hs].copy_from_slice(&row[2 * c + h * hs..2 * c + (h + 1) * hs]);
        }
    }
}

/// Each row's query attends over its slot's keys at positions 0..=pos:
/// `att = softmax(q·Kᵀ / sqrt(hs)) · V`, heads side by side (GPT-2's merge). `scores` holds at
/// least `rows · n_head · t_max` entries, `t_max` the cache capacity.
pub(crate) fn attend<F: Float>(
    cache: &KvCache<F>,
    layer: usize,
    rows: &[(usize, u32)],
    pos: &[usize],
    qkv: &[F],
    att: &mut [F],
    scores: &mut [F],
) {
    let (nh, hs) = (cache.n_head, cache.head_dim);
    let c = nh * hs;
    let t_max = cache.capacity;
    let scale = F::of(1.0 / (hs as f64).sqrt());
    let work = |(i, (out, sc)): (usize, (&mut [F], &mut [F]))| {
        let (r, h) = (i / nh, i % nh);
        let t = pos[r] + 1;
        let q = &qkv[r * 3 * c + h * hs..][..hs];
        let base = cache.offset(layer, rows[r].0, h, 0);
        let (keys, values) = (&cache.k[base..base + t * hs], &cache.v[base..base + t * hs]);
        head(q, keys, values, scale, &mut sc[..t], out);
    };
    let n = rows.len() * nh;
    let items = att[..n * hs].chunks_mut(hs).zip(scores[..n * t_max].chunks_mut(t_max));
    let total: usize = pos.iter().map(|&p| 2 * (p + 1) * c).sum();
    if total >= PAR_WORK && rayon::current_num_threads() > 1 {
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

/// One head of one row: `s_p = q·k_p · scale`, `a = softmax(s)`, `out = Σ_p a_p v_p`.
#[inline]
fn head<F: Float>(q: &[F], keys: &[F], values: &[F], scale: F, sc: &mut [F], out: &mut [F]) {
    let hs = q.len();
    // One key at a time: consecutive keys' sums are independent, so the core overlaps them.
    for (s, k) in sc.iter_mut().zip(keys.chunks_exact(hs)) {
        *s = dots::<F, 1, 1>(q, k, hs)[0][0] * scale;
    }
    softmax_row_in_place(sc);
    // out = Σ_p a_p v_p, in column blocks whose accumulators stay in registers across p
    // (accumulating in memory would chain every step through a store and a load).
    let mut d = 0;
    while d + 64 <= hs {
        weighted_sum::<F, 64>(sc, values, hs, d, &mut out[d..d + 64]);
        d += 64;
    }
    while d + 16 <= hs {
        weighted_sum::<F, 16>(sc, values, hs, d, &mut out[d..d + 16]);
        d += 16;
    }
    for d in d..hs {
        weighted_sum::<F, 1>(sc, values, hs, d, &mut out[d..d + 1]);
    }
}

/// out[j] = Σ_p a[p] · v[p, d0 + j] for `B` columns, one fma per p in order.
#[inline(always)]
fn weighted_sum<F: Float, const B: usize>(a: &[F], values: &[F], hs: usize, d0: usize, out: &mut [F]) {
    let mut acc = [F::zero(); B];
    for (&ap, vr) in a.iter().zip(values.chunks_exact(hs)) {
        let v: &[F; B] = vr[d0..d0 + B].try_into().expect("value block");
        for j in 0..B {
            acc[j] = ap.mul_add(v[j], acc[j]);
        }
    }
    out.copy_from_slice(&acc);
}
