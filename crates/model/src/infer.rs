//! Inference with a preallocated KV cache: no tape, no allocation per token.
//!
//! A [`KvCache`] holds, for every layer, the keys and values of each *slot* (one sequence) at every
//! position so far. [`Gpt::forward_cached`] takes a list of rows `(slot, token)`: each row appends
//! one token to its slot. A prompt's prefill is many rows of one slot; a decode step is one row
//! per active slot. The rows of one call are processed as one batch through every matrix product.
//!
//! Each output element is computed by the same sequence of floating-point operations whatever the
//! batch, the rows' order or the thread count, so generation does not depend on any of them.

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::{layer_norm_rows, softmax_row_in_place};
use rayon::prelude::*;

use crate::{Gpt, GptConfig, ModelError};

/// Keys and values of every layer for a fixed number of sequence slots.
pub struct KvCache<F> {
    n_layer: usize,
    slots: usize,
    n_head: usize,
    head_dim: usize,
    capacity: usize,
    /// Layout `[layer][slot][head][position][head_dim]`: one head's keys are contiguous.
    k: Vec<F>,
    v: Vec<F>,
    lens: Vec<usize>,
}

impl<F: Float> KvCache<F> {
    /// A cache for `slots` sequences of up to `capacity` tokens each (at most the context length).
    pub fn new(config: &GptConfig, slots: usize, capacity: usize) -> Self {
        let capacity = capacity.min(config.context_length);
        let n = config.n_layer * slots * config.n_embd * capacity;
        KvCache {
            n_layer: config.n_layer,
            slots,
            n_head: config.n_head,
            head_dim: config.head_dim(),
            capacity,
            k: vec![F::zero(); n],
            v: vec![F::zero(); n],
            lens: vec![0; slots],
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tokens each slot can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens cached in `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    /// Empties `slot` (its memory is reused).
    pub fn reset(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Empties every slot.
    pub fn reset_all(&mut self) {
        self.lens.fill(0);
    }

    /// Makes `to` a copy of `from` (a shared prompt prefilled once, then sampled G times).
    pub fn copy_slot(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let len = self.lens[from];
        let run = len * self.head_dim;
        for layer in 0..self.n_layer {
            for head in 0..self.n_head {
                let src = self.offset(layer, from, head, 0);
                let dst = self.offset(layer, to, head, 0);
                self.k.copy_within(src..src + run, dst);
                self.v.copy_within(src..src + run, dst);
            }
        }
        self.lens[to] = len;
    }

    #[inline]
    fn offset(&self, layer: usize, slot: usize, head: usize, pos: usize) -> usize {
        (((layer * self.slots + slot) * self.n_head + head) * self.capacity + pos) * self.head_dim
    }
}

/// Work buffers for [`Gpt::forward_cached`], sized once for a maximum number of rows.
pub struct InferScratch<F> {
    max_rows: usize,
    pos: Vec<usize>,
    x: Vec<F>,
    xn: Vec<F>,
    qkv: Vec<F>,
    att: Vec<F>,
    h4: Vec<F>,
    y: Vec<F>,
    scores: Vec<F>,
    zeros: Vec<F>,
}

impl<F: Float> InferScratch<F> {
    /// Buffers for up to `max_rows` rows per call.
    pub fn new(config: &GptConfig, max_rows: usize) -> Self {
        let c = config.n_embd;
        let z = |n: usize| vec![F::zero(); n];
        InferScratch {
            max_rows,
            pos: vec![0; max_rows],
            x: z(max_rows * c),
            xn: z(max_rows * c),
            qkv: z(max_rows * 3 * c),
            att: z(max_rows * c),
            h4: z(max_rows * 4 * c),
            y: z(max_rows * c),
            scores: z(max_rows * config.n_head * config.context_length),
            zeros: z(4 * c),
        }
    }
}

impl<F: Float> Gpt<F> {
    /// Appends one token per row to its slot and writes each row's next-token logits into
    /// `logits` (rows x vocab, row-major). Rows of the same slot are consecutive positions in order.
    pub fn forward_cached(
        &self,
        cache: &mut KvCache<F>,
        scratch: &mut InferScratch<F>,
        rows: &[(usize, u32)],
        logits: &mut [F],
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (c, v_size, n) = (cfg.n_embd, cfg.vocab_size, rows.len());
        if n > scratch.max_rows {
            return Err(ModelError::ShapeMismatch {
                what: "rows of forward_cached",
                expected: vec![scratch.max_rows],
                got: vec![n],
            });
        }
        if logits.len() != n * v_size {
            return Err(ModelError::ShapeMismatch {
                what: "logits buffer",
                expected: vec![n, v_size],
                got: vec![logits.len()],
            });
        }
        // Positions: each row takes the next free position of its slot.
        for (r, &(slot, token)) in rows.iter().enumerate() {
            let err = if slot >= cache.slots {
                Some(ModelError::ShapeMismatch {
                    what: "slot index",
                    expected: vec![cache.slots],
                    got: vec![slot],
                })
            } else if token as usize >= v_size {
                Some(ModelError::TokenOutOfRange { id: token, vocab_size: v_size })
            } else if cache.lens[slot] >= cache.capacity {
                Some(ModelError::CacheFull { slot, capacity: cache.capacity })
            } else {
                None
            };
            if let Some(err) = err {
                // Leave the cache as it was: undo the positions taken so far.
                for &(s, _) in &rows[..r] {
                    cache.lens[s] -= 1;
                }
                return Err(err);
            }
            scratch.pos[r] = cache.lens[slot];
            cache.lens[slot] += 1;
        }
        let s = scratch;
        let pos = &s.pos[..n];

        // x = wte[token] + wpe[pos]
        let wte = self.params.value(self.ids.wte).as_slice().expect("contiguous wte");
        let wpe = self.params.value(self.ids.wpe).as_slice().expect("contiguous wpe");
        for (r, &(_, token)) in rows.iter().enumerate() {
            let x = &mut s.x[r * c..(r + 1) * c];
            let te = &wte[token as usize * c..][..c];
            let pe = &wpe[pos[r] * c..][..c];
            for i in 0..c {
                x[i] = te[i] + pe[i];
            }
        }

        let eps = F::of(cfg.layer_norm_epsilon);
        for (layer, block) in self.ids.blocks.iter().enumerate() {
            self.ln(block.ln_1, &s.x[..n * c], &mut s.xn[..n * c], &s.zeros, eps);
            self.linear(block.c_attn, &s.xn[..n * c], &mut s.qkv[..n * 3 * c], &s.zeros);
            write_kv(cache, layer, rows, pos, &s.qkv[..n * 3 * c], c);
            attend(cache, layer, rows, pos, &s.qkv[..n * 3 * c], &mut s.att[..n * c], &mut s.scores);
            self.linear(block.attn_proj, &s.att[..n * c], &mut s.y[..n * c], &s.zeros);
            add_in_place(&mut s.x[..n * c], &s.y[..n * c]);

            self.ln(block.ln_2, &s.x[..n * c], &mut s.xn[..n * c], &s.zeros, eps);
            self.linear(block.c_fc, &s.xn[..n * c], &mut s.h4[..n * 4 * c], &s.zeros);
            s.h4[..n * 4 * c]
                .par_chunks_mut(4 * c)
                .for_each(|row| row.iter_mut().for_each(|h| *h = gelu(*h)));
            self.linear(block.mlp_proj, &s.h4[..n * 4 * c], &mut s.y[..n * c], &s.zeros);
            add_in_place(&mut s.x[..n * c], &s.y[..n * c]);
        }
        self.ln(self.ids.ln_f, &s.x[..n * c], &mut s.xn[..n * c], &s.zeros, eps);
        // Tied head: logits[r, v] = xn[r] · wte[v].
        lm_head(&s.xn[..n * c], wte, c, logits);
        Ok(())
    }

    fn ln(
        &self,
        (w, b): (pglm_autograd::ParamId, Option<pglm_autograd::ParamId>),
        x: &[F],
        out: &mut [F],
        zeros: &[F],
        eps: F,
    ) {
        let c = self.config().n_embd;
        let w = self.params.value(w).as_slice().expect("contiguous weight");
        let b = match b {
            Some(b) => self.params.value(b).as_slice().expect("contiguous bias"),
            None => &zeros[..c],
        };
        layer_norm_rows(x, w, b, eps, out);
    }

    fn linear(
        &self,
        (w, b): (pglm_autograd::ParamId, Option<pglm_autograd::ParamId>),
        x: &[F],
        out: &mut [F],
        zeros: &[F],
    ) {
        let wv = self.params.value(w);
        let (k, n_out) = (wv.shape()[0], wv.shape()[1]);
        let w = wv.as_slice().expect("contiguous weight");
        let b = match b {
            Some(b) => self.params.value(b).as_slice().expect("contiguous bias"),
            None => &zeros[..n_out],
        };
        matmul_rows(x, w, b, k, n_out, out);
    }
}

/// GELU, tanh approximation (GPT-2's `gelu_new`): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#[inline]
fn gelu<F: Float>(x: F) -> F {
    let s = F::of((2.0 / std::f64::consts::PI).sqrt());
    let half = F::of(0.5);
    half * x * (F::one() + (s * (x + F::of(0.044715) * x * x * x)).tanh())
}

fn add_in_place<F: Float>(x: &mut [F], y: &[F]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}

/// Columns per block of [`matmul_rows`]: 64 f32 accumulators are four AVX-512 registers.
const COLS: usize = 64;

/// Rows that share each load of a weight block (4 rows x 64 columns = 16 AVX-512 accumulators).
const GROUP: usize = 4;

/// out[r, :] = bias + x[r, :] · w for rows of x (k wide) and w (k x n, row-major).
///
/// Every output element is computed the same way — from the bias, `acc = fma(x[r, i], w[i, j], acc)`
/// for i = 0, 1, ... in order — whether its row is computed alone or in a group of [`GROUP`], on any
/// thread, so results never depend on the batch. Large products run in parallel: over groups of
/// rows when there are several, over column blocks of each row otherwise (batch-1 decoding).
fn matmul_rows<F: Float>(x: &[F], w: &[F], bias: &[F], k: usize, n: usize, out: &mut [F]) {
    let rows = x.len() / k;
    let big = rows * k * n >= 1 << 17;
    if big && rows >= 2 * GROUP {
        out.par_chunks_mut(GROUP * n)
            .zip(x.par_chunks(GROUP * k))
            .for_each(|(o, xg)| rows_block(xg, w, bias, k, n, o));
    } else if big {
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            out[r * n..(r + 1) * n]
                .par_chunks_mut(COLS)
                .enumerate()
                .for_each(|(jb, o)| col_block(xr, w, bias, n, jb * COLS, o));
        }
    } else {
        rows_block(x, w, bias, k, n, out);
    }
}

/// All rows of `x`, one column block at a time, [`GROUP`] rows per pass over the block.
fn rows_block<F: Float>(x: &[F], w: &[F], bias: &[F], k: usize, n: usize, out: &mut [F]) {
    let rows = x.len() / k;
    for j0 in (0..n).step_by(COLS) {
        let width = COLS.min(n - j0);
        let mut r = 0;
        if width == COLS {
            while r + GROUP <= rows {
                group_block(&x[r * k..(r + GROUP) * k], w, bias, k, n, j0, &mut out[r * n..(r + GROUP) * n]);
                r += GROUP;
            }
        }
        for r in r..rows {
            col_block(&x[r * k..(r + 1) * k], w, bias, n, j0, &mut out[r * n + j0..r * n + j0 + width]);
        }
    }
}

/// [`GROUP`] rows x [`COLS`] columns: each weight row segment is loaded once for all the rows.
#[inline]
fn group_block<F: Float>(x: &[F], w: &[F], bias: &[F], k: usize, n: usize, j0: usize, out: &mut [F]) {
    let mut acc = [[F::zero(); COLS]; GROUP];
    for a in &mut acc {
        a.copy_from_slice(&bias[j0..j0 + COLS]);
    }
    for i in 0..k {
        let wr = &w[i * n + j0..i * n + j0 + COLS];
        for (g, a) in acc.iter_mut().enumerate() {
            let xi = x[g * k + i];
            for j in 0..COLS {
                a[j] = xi.mul_add(wr[j], a[j]);
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        out[g * n + j0..g * n + j0 + COLS].copy_from_slice(a);
    }
}

/// out[j] = bias[j0 + j] + sum_i xr[i] * w[i, j0 + j] for one row and up to [`COLS`] columns,
/// with the same fused multiply-adds in the same order as [`group_block`].
#[inline]
fn col_block<F: Float>(xr: &[F], w: &[F], bias: &[F], n: usize, j0: usize, out: &mut [F]) {
    let width = out.len();
    if width == COLS {
        // A fixed-size accumulator stays in registers for the whole sum over i.
        let mut acc = [F::zero(); COLS];
        acc.copy_from_slice(&bias[j0..j0 + COLS]);
        for (i, &xi) in xr.iter().enumerate() {
            let wr = &w[i * n + j0..i * n + j0 + COLS];
            for j in 0..COLS {
                acc[j] = xi.mul_add(wr[j], acc[j]);
            }
        }
        out.copy_from_slice(&acc);
    } else {
        out.copy_from_slice(&bias[j0..j0 + width]);
        for (i, &xi) in xr.iter().enumerate() {
            let wr = &w[i * n + j0..i * n + j0 + width];
            for j in 0..width {
                out[j] = xi.mul_add(wr[j], out[j]);
            }
        }
    }
}

/// logits[r, v] = x[r] · wte[v] (the tied head, wte stored (V, C)).
fn lm_head<F: Float>(x: &[F], wte: &[F], c: usize, logits: &mut [F]) {
    let vocab = wte.len() / c;
    let rows = x.len() / c;
    let row = |r: usize, out: &mut [F]| {
        let xr = &x[r * c..(r + 1) * c];
        for (v, o) in out.iter_mut().enumerate() {
            *o = dot(xr, &wte[v * c..(v + 1) * c]);
        }
    };
    if rows * vocab * c >= 1 << 18 {
        logits.par_chunks_mut(vocab).enumerate().for_each(|(r, out)| row(r, out));
    } else {
        logits.chunks_mut(vocab).enumerate().for_each(|(r, out)| row(r, out));
    }
}

/// A dot product with eight independent partial sums (vectorises; fixed order, so deterministic).
#[inline]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut tail = F::zero();
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Copies each row's key and value (from its packed qkv row) into the cache at its position.
fn write_kv<F: Float>(
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

/// Causal attention of each row's query over its slot's keys at positions 0..=pos:
/// att = softmax(q·Kᵀ / sqrt(hs)) · V, heads written side by side (GPT-2's merge).
fn attend<F: Float>(
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
    let scale = F::of(1.0 / (hs as f64).sqrt());
    let t_max = scores.len() / (att.len() / c * nh).max(1);
    let work = |(i, (out, sc)): (usize, (&mut [F], &mut [F]))| {
        let (r, h) = (i / nh, i % nh);
        let slot = rows[r].0;
        let t = pos[r] + 1;
        let q = &qkv[r * 3 * c + h * hs..][..hs];
        let base = cache.offset(layer, slot, h, 0);
        let sc = &mut sc[..t];
        for (p, s) in sc.iter_mut().enumerate() {
            *s = dot(q, &cache.k[base + p * hs..base + (p + 1) * hs]) * scale;
        }
        softmax_row_in_place(sc);
        out.fill(F::zero());
        for (p, &a) in sc.iter().enumerate() {
            let vr = &cache.v[base + p * hs..base + (p + 1) * hs];
            for d in 0..hs {
                out[d] += a * vr[d];
            }
        }
    };
    let n = rows.len() * nh;
    let outs = att.chunks_mut(hs);
    let scs = scores.chunks_mut(t_max);
    let total: usize = pos.iter().map(|&p| (p + 1) * hs).sum::<usize>() * nh;
    if total >= 1 << 16 {
        outs.zip(scs).take(n).enumerate().par_bridge().for_each(work);
    } else {
        outs.zip(scs).take(n).enumerate().for_each(work);
    }
}
