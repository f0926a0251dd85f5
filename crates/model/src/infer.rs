//! Inference with a preallocated KV cache: no tape, no allocation per token.
//!
//! A [`KvCache`] holds, for every layer, the keys and values of each *slot* (one sequence) at every
//! position so far. [`Gpt::forward_cached`] takes a list of rows `(slot, token)`: each row appends
//! one token to its slot. A prompt's prefill is many rows of one slot; a decode step is one row
//! per active slot. The rows of one call are processed as one batch through every matrix product.
//!
//! Each output element is computed by the same sequence of floating-point operations whatever the
//! batch, the rows' order or the thread count, so generation does not depend on any of them.
//!
//! Two ways to use two or more cores (see `split`): a call of few rows (batch-1 decoding) splits
//! each matrix product's *columns* over the threads, so that each core streams its share of the
//! weights; a call of many rows whose slots ascend (decode steps of a batch, prefills, the scorer)
//! splits the *rows*, each thread running its rows through the whole model with no fork-join
//! between the ops.

use pglm_autograd::Float;
use pglm_autograd::ops::nn::kernels::{layer_norm_row, layer_norm_rows};

use crate::{Gpt, GptConfig, ModelError};

mod attention;
mod gelu;
mod matmul;
mod packed;
mod split;

use attention::{attend, write_kv};
use packed::PackedWeights;
use split::{Batch, Slots};

/// Keys and values of every layer for a fixed number of sequence slots.
pub struct KvCache<F> {
    n_layer: usize,
    slots: usize,
    n_head: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions stored per head: `capacity` rounded up to whole blocks of 16 keys (see
    /// `attention`), so that every block of scores a query computes lies inside its head's keys.
    stride: usize,
    /// Keys, transposed in blocks of 16 positions per head:
    /// `[slot][layer][head][stride / 16][head_dim][16]`, so that a query's scores against 16
    /// positions are one register per dimension and its keys are contiguous blocks (see
    /// `attention`), and each slot's keys are one contiguous run (a row-parallel call splits the
    /// slots).
    k: Vec<F>,
    /// Values: `[slot][layer][head][position][head_dim]` (`stride` positions per head), one
    /// head's values contiguous.
    v: Vec<F>,
    lens: Vec<usize>,
}

impl<F: Float> KvCache<F> {
    /// A cache for `slots` sequences of up to `capacity` tokens each (at most the context length).
    pub fn new(config: &GptConfig, slots: usize, capacity: usize) -> Self {
        let capacity = capacity.min(config.context_length);
        let stride = attention::score_stride(capacity);
        let n = config.n_layer * slots * config.n_embd * stride;
        KvCache {
            n_layer: config.n_layer,
            slots,
            n_head: config.n_head,
            head_dim: config.head_dim(),
            capacity,
            stride,
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
        let hs = self.head_dim;
        let slots = self.slots_mut();
        for layer in 0..slots.n_layer {
            for head in 0..slots.n_head {
                let (src, dst) = (slots.head_base(layer, from, head), slots.head_base(layer, to, head));
                slots.v.copy_within(src..src + len * hs, dst);
                // Whole key blocks: the positions past `len` only feed scores that are discarded.
                let blocks = attention::key_block(len.next_multiple_of(attention::KEY_BLOCK), hs);
                slots.k.copy_within(src..src + blocks, dst);
            }
        }
        self.lens[to] = len;
    }

    /// Every slot's keys and values, to be split between the tasks of a call.
    fn slots_mut(&mut self) -> Slots<'_, F> {
        Slots::new(self.n_layer, self.n_head, self.head_dim, self.stride, &mut self.k, &mut self.v)
    }
}

/// Work buffers for [`Gpt::forward_cached`], sized once for a maximum number of rows, and a copy
/// of the blocks' weights in the layout the decode kernels stream (made on the first call, and
/// again only after the model's weights change: keep one scratch per model for the whole of a
/// generation).
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
    /// The matrix products' per-task column tiles (see `matmul`).
    tiles: Vec<F>,
    /// The blocks' weights laid out for the kernels, remade when the model's weights change.
    packed: PackedWeights<F>,
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
            scores: z(max_rows * config.n_head * attention::score_stride(config.context_length)),
            tiles: z(max_rows * (4 * c).max(config.vocab_size)),
            packed: PackedWeights::new(),
            zeros: z(c),
        }
    }
}

impl<F: Float> Gpt<F> {
    /// Appends one token per row to its slot and writes each row's next-token logits into
    /// `logits` (rows x vocab, row-major). Rows of the same slot are consecutive positions in order.
    ///
    /// Runs on a thread of rayon's pool: a call from outside the pool moves there once, so that
    /// the step's twenty-odd parallel products each cost a fork-join between workers (about
    /// 2 µs) instead of a hand-over from outside (10-20 µs). A caller that makes many calls in a
    /// row (a decode loop) does best to make them all from inside the pool, as the sampler does.
    pub fn forward_cached(
        &self,
        cache: &mut KvCache<F>,
        scratch: &mut InferScratch<F>,
        rows: &[(usize, u32)],
        logits: &mut [F],
    ) -> Result<(), ModelError> {
        rayon::scope(|_| self.forward_cached_here(cache, scratch, rows, logits))
    }

    fn forward_cached_here(
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
        scratch.packed.refresh(self);
        let InferScratch { pos, x, xn, qkv, att, h4, y, scores, tiles, packed, zeros, max_rows } = scratch;
        let (score_w, tile_w) = (scores.len() / *max_rows, tiles.len() / *max_rows);
        let batch = Batch {
            rows,
            pos: &pos[..n],
            x: &mut x[..n * c],
            xn: &mut xn[..n * c],
            qkv: &mut qkv[..n * 3 * c],
            att: &mut att[..n * c],
            h4: &mut h4[..n * 4 * c],
            y: &mut y[..n * c],
            scores: &mut scores[..n * score_w],
            tiles: &mut tiles[..n * tile_w],
            logits,
        };
        let weights = Weights { packed, zeros, eps: F::of(cfg.layer_norm_epsilon) };
        split::run(self, &weights, cache.slots_mut(), batch);
        Ok(())
    }

    /// The whole model on `b`'s rows: the embeddings, every block (each row's key and value
    /// written to the cache before it attends), the final norm and the tied head. With `par`, each
    /// op splits its work over the pool's threads; without, all of it runs on the calling thread.
    fn forward_rows(&self, w: &Weights<'_, F>, slots: &mut Slots<'_, F>, b: Batch<'_, F>, par: bool) {
        let c = self.config().n_embd;
        let Batch { rows, pos, x, xn, qkv, att, h4, y, scores, tiles, logits } = b;
        // x = wte[token] + wpe[pos]
        let wte = self.params.value(self.ids.wte).as_slice().expect("contiguous wte");
        let wpe = self.params.value(self.ids.wpe).as_slice().expect("contiguous wpe");
        for (r, &(_, token)) in rows.iter().enumerate() {
            let x = &mut x[r * c..(r + 1) * c];
            let te = &wte[token as usize * c..][..c];
            let pe = &wpe[pos[r] * c..][..c];
            for i in 0..c {
                x[i] = te[i] + pe[i];
            }
        }
        let packed = w.packed;
        let no_epilogue = |_: &mut [F]| {};
        for (layer, block) in self.ids.blocks.iter().enumerate() {
            // x = x + proj(attention(ln_1(x)))
            self.ln(block.ln_1, x, xn, w, par);
            matmul::linear(xn, packed.get(layer, 0), tiles, qkv, no_epilogue, par);
            write_kv(slots, layer, rows, pos, qkv, c);
            attend(slots, layer, rows, pos, qkv, att, scores, par);
            matmul::linear(att, packed.get(layer, 1), tiles, y, no_epilogue, par);
            add_in_place(x, y);
            // x = x + proj(gelu(fc(ln_2(x)))), GELU applied to each column tile as it is finished.
            self.ln(block.ln_2, x, xn, w, par);
            matmul::linear(xn, packed.get(layer, 2), tiles, h4, gelu::gelu_in_place, par);
            matmul::linear(h4, packed.get(layer, 3), tiles, y, no_epilogue, par);
            add_in_place(x, y);
        }
        self.ln(self.ids.ln_f, x, xn, w, par);
        // Tied head: logits[r, v] = xn[r] · wte[v], as a product with the packed wteᵀ.
        matmul::linear(xn, packed.head(), tiles, logits, no_epilogue, par);
    }

    fn ln(
        &self,
        (weight, bias): (pglm_autograd::ParamId, Option<pglm_autograd::ParamId>),
        x: &[F],
        out: &mut [F],
        w: &Weights<'_, F>,
        par: bool,
    ) {
        let c = self.config().n_embd;
        let weight = self.params.value(weight).as_slice().expect("contiguous weight");
        let bias = match bias {
            Some(b) => self.params.value(b).as_slice().expect("contiguous bias"),
            None => &w.zeros[..c],
        };
        if par {
            layer_norm_rows(x, weight, bias, w.eps, out);
        } else {
            for (x, o) in x.chunks(c).zip(out.chunks_mut(c)) {
                layer_norm_row(x, weight, bias, w.eps, o);
            }
        }
    }
}

/// What every row of a call reads besides its own buffers.
struct Weights<'a, F> {
    packed: &'a PackedWeights<F>,
    zeros: &'a [F],
    eps: F,
}

fn add_in_place<F: Float>(x: &mut [F], y: &[F]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}
