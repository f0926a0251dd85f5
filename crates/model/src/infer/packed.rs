//! The decode path's own copy of the blocks' weights, laid out for its register tiles.
//!
//! A linear layer's weight is stored `(in, out)` row-major, but a register tile of the product
//! `x·W` walks *down* a strip of [`COLS`] columns: read in place, that strip is 128 bytes from each
//! of `k` rows far apart, a new page every few rows, which the prefetcher does not follow. So each
//! weight is copied once into panels: strip `s` holds `w[i, s·COLS + c]` at `(s·k + i)·COLS + c`,
//! the last strip padded with zero columns. A decode step then reads every weight exactly once,
//! front to back, and the tiles keep their accumulators in registers for the whole of `k`.
//!
//! The copy is remade only when the model's parameters have changed since it was made (their
//! [`ParamStore::stamp`](pglm_autograd::ParamStore::stamp)): once per generation call in an RL
//! loop, never once per token. It costs as much memory as the weights it copies: the blocks'
//! linear layers and `wte` (the tied head reads it transposed, as one more packed weight).

use pglm_autograd::{Float, ParamId};

use super::matmul::COLS;
use crate::Gpt;

/// One linear layer's weight in strips of [`COLS`] columns, and its bias padded to whole strips.
pub(crate) struct Panels<F> {
    /// Rows of the weight (input width).
    pub k: usize,
    /// Columns of the weight (output width).
    pub n: usize,
    /// `strips · k · COLS` values, strip-major.
    pub w: Vec<F>,
    /// `strips · COLS` values (zeros when the layer has no bias).
    pub bias: Vec<F>,
}

impl<F: Float> Panels<F> {
    fn empty() -> Self {
        Panels { k: 0, n: 0, w: Vec::new(), bias: Vec::new() }
    }

    /// `w` and `bias` packed (tests of the kernels).
    #[cfg(test)]
    pub fn of(w: &[F], bias: Option<&[F]>, k: usize, n: usize) -> Self {
        let mut p = Self::empty();
        p.fill(w, bias, k, n);
        p
    }

    /// Strip `s`: its `k x COLS` weights and its `COLS` biases.
    #[inline]
    pub fn strip(&self, s: usize) -> (&[F], &[F]) {
        let len = self.k * COLS;
        (&self.w[s * len..(s + 1) * len], &self.bias[s * COLS..(s + 1) * COLS])
    }

    /// Sizes the buffers for a `k x n` weight (zeros), reusing their memory.
    fn reset(&mut self, k: usize, n: usize) {
        let strips = n.div_ceil(COLS);
        self.k = k;
        self.n = n;
        self.w.clear();
        self.w.resize(strips * k * COLS, F::zero());
        self.bias.clear();
        self.bias.resize(strips * COLS, F::zero());
    }

    /// Repacks `w` (`k x n`, row-major) and `bias` into this buffer, reusing its memory.
    fn fill(&mut self, w: &[F], bias: Option<&[F]>, k: usize, n: usize) {
        self.reset(k, n);
        if let Some(b) = bias {
            self.bias[..n].copy_from_slice(b);
        }
        // Row by row of `w`, so that the source is read in one contiguous pass.
        for (i, row) in w.chunks_exact(n).enumerate() {
            for (s, src) in row.chunks(COLS).enumerate() {
                let dst = (s * k + i) * COLS;
                self.w[dst..dst + src.len()].copy_from_slice(src);
            }
        }
    }

    /// Packs the transpose of `e` (`n x k`, row-major; the tied head's `wte`) as a `k x n`
    /// weight without bias: column `v` of the product is row `v` of `e`.
    fn fill_transposed(&mut self, e: &[F], k: usize, n: usize) {
        self.reset(k, n);
        for (v, row) in e.chunks_exact(k).enumerate() {
            let (s, col) = (v / COLS, v % COLS);
            for (i, &x) in row.iter().enumerate() {
                self.w[(s * k + i) * COLS + col] = x;
            }
        }
    }
}

/// The four linear layers of every block and the tied head, packed, and the stamp of the
/// weights they came from.
pub(crate) struct PackedWeights<F> {
    stamp: Option<(u64, u64)>,
    /// `[4 · layer + j]`, j = 0 `c_attn`, 1 `attn.c_proj`, 2 `c_fc`, 3 `mlp.c_proj`.
    layers: Vec<Panels<F>>,
    /// `wteᵀ` (`C x vocab`): the head's product is then the same kernel as the blocks'.
    head: Panels<F>,
}

impl<F: Float> PackedWeights<F> {
    pub fn new() -> Self {
        PackedWeights { stamp: None, layers: Vec::new(), head: Panels::empty() }
    }

    /// The tied head's weight, `wteᵀ`.
    #[inline]
    pub fn head(&self) -> &Panels<F> {
        &self.head
    }

    /// Layer `j` of block `layer` (numbered as in [`PackedWeights::layers`]).
    #[inline]
    pub fn get(&self, layer: usize, j: usize) -> &Panels<F> {
        &self.layers[4 * layer + j]
    }

    /// Makes the panels match `model`'s current weights; does nothing when they already do.
    pub fn refresh(&mut self, model: &Gpt<F>) {
        let stamp = model.params.stamp();
        if self.stamp == Some(stamp) {
            return;
        }
        let blocks = &model.ids.blocks;
        self.layers.resize_with(4 * blocks.len(), Panels::empty);
        for (l, b) in blocks.iter().enumerate() {
            for (j, &(w, bias)) in [b.c_attn, b.attn_proj, b.c_fc, b.mlp_proj].iter().enumerate() {
                pack_one(model, w, bias, &mut self.layers[4 * l + j]);
            }
        }
        let wte = model.params.value(model.ids.wte);
        let (vocab, c) = (wte.shape()[0], wte.shape()[1]);
        self.head.fill_transposed(wte.as_slice().expect("contiguous wte"), c, vocab);
        self.stamp = Some(stamp);
    }
}

fn pack_one<F: Float>(model: &Gpt<F>, w: ParamId, bias: Option<ParamId>, into: &mut Panels<F>) {
    let wv = model.params.value(w);
    let (k, n) = (wv.shape()[0], wv.shape()[1]);
    let w = wv.as_slice().expect("contiguous weight");
    let bias = bias.map(|b| model.params.value(b).as_slice().expect("contiguous bias"));
    into.fill(w, bias, k, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_hold_each_weight_once_in_strip_order_with_zero_padding() {
        let (k, n) = (3, COLS + 5);
        let w: Vec<f32> = (0..k * n).map(|i| i as f32 + 1.0).collect();
        let b: Vec<f32> = (0..n).map(|j| -(j as f32)).collect();
        let mut p = Panels::empty();
        p.fill(&w, Some(&b), k, n);
        for s in 0..2 {
            let (ws, bs) = p.strip(s);
            for c in 0..COLS {
                let j = s * COLS + c;
                assert_eq!(bs[c], if j < n { b[j] } else { 0.0 });
                for i in 0..k {
                    assert_eq!(ws[i * COLS + c], if j < n { w[i * n + j] } else { 0.0 });
                }
            }
        }
    }

    #[test]
    fn the_head_is_packed_as_the_transpose_of_wte() {
        let (vocab, c) = (COLS + 3, 5);
        let e: Vec<f32> = (0..vocab * c).map(|i| i as f32 + 1.0).collect();
        let mut p = Panels::empty();
        p.fill_transposed(&e, c, vocab);
        let mut t = vec![0.0; c * vocab];
        for v in 0..vocab {
            for i in 0..c {
                t[i * vocab + v] = e[v * c + i];
            }
        }
        let q = Panels::of(&t, None, c, vocab);
        assert_eq!((p.k, p.n, &p.w, &p.bias), (q.k, q.n, &q.w, &q.bias));
    }

    #[test]
    fn the_packed_copy_follows_changes_to_the_weights() {
        let config = crate::GptConfig::new(11, 8, 1, 2, 8);
        let mut model = Gpt::<f32>::new(config, 0).unwrap();
        let mut packed = PackedWeights::new();
        packed.refresh(&model);
        let before = packed.get(0, 0).strip(0).0[0];
        let id = model.ids.blocks[0].c_attn.0;
        model.params.get_mut(id).value_mut()[[0, 0]] += 1.0;
        packed.refresh(&model);
        assert_eq!(packed.get(0, 0).strip(0).0[0], before + 1.0);
    }
}
