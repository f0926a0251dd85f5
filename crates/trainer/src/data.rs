//! Token sequences, the seeded data order, and batches.
//!
//! A [`Sequence`] is `n + 1` tokens: the model reads `tokens[..n]` and predicts `tokens[1..]`; the
//! target at position `j` counts in the loss when `j + 1 >= loss_from` (1 for a corpus: every
//! target; after the prompt for SFT). Each epoch visits the sequences in a permutation drawn from
//! `(seed, epoch)` alone, so a [`DataCursor`] `(epoch, position)` is the data order's whole state:
//! saving it is enough to resume mid-epoch.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::Float;
use serde::{Deserialize, Serialize};

/// One training sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// The tokens, at least two.
    pub tokens: Vec<u32>,
    /// Index in `tokens` of the first token that is a loss target.
    pub loss_from: usize,
}

impl Sequence {
    /// Positions the model reads (`tokens.len() - 1`).
    pub fn len(&self) -> usize {
        self.tokens.len() - 1
    }

    /// Whether the model reads no position (never, for sequences the loaders build).
    pub fn is_empty(&self) -> bool {
        self.tokens.len() < 2
    }

    /// Targets that count in the loss.
    pub fn loss_tokens(&self) -> usize {
        self.tokens.len() - self.loss_from.max(1)
    }
}

/// Where the data order stands: the next sequence is `permutation(seed, epoch)[position]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Sequences of this epoch already used.
    pub position: usize,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, portable generator whose output is fixed by
/// its seed forever, unlike library RNGs that may change between versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`: Lemire's multiply-shift, bias below 2⁻⁶⁴·n.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Mixes several words into one seed (each through a SplitMix64 step, so nearby inputs diverge).
pub fn mix_seed(words: &[u64]) -> u64 {
    words.iter().fold(0x2545_F491_4F6C_DD1D, |acc, &w| SplitMix64(acc ^ w).next())
}

/// The permutation of `0..n` for `epoch`: Fisher-Yates driven by `mix_seed([seed, epoch])`.
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64(mix_seed(&[seed, epoch]));
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    perm
}

/// The seeded order over `n` sequences, caching the current epoch's permutation.
pub struct DataOrder {
    seed: u64,
    n: usize,
    epoch: u64,
    perm: Vec<usize>,
}

impl DataOrder {
    /// The order of `n` sequences under `seed`.
    pub fn new(seed: u64, n: usize) -> Self {
        DataOrder { seed, n, epoch: 0, perm: epoch_permutation(seed, 0, n) }
    }

    /// The next `k` sequence indices from `cursor`, advancing it (into the next epoch if needed).
    pub fn take(&mut self, cursor: &mut DataCursor, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        if self.n == 0 {
            return out;
        }
        while out.len() < k {
            if cursor.position >= self.n {
                cursor.epoch += 1;
                cursor.position = 0;
            }
            if self.epoch != cursor.epoch {
                self.epoch = cursor.epoch;
                self.perm = epoch_permutation(self.seed, self.epoch, self.n);
            }
            let run = (k - out.len()).min(self.n - cursor.position);
            out.extend_from_slice(&self.perm[cursor.position..cursor.position + run]);
            cursor.position += run;
        }
        out
    }
}

/// A padded batch, ready for `Gpt::loss`.
pub struct Batch<F> {
    /// Input ids, shape (B, T).
    pub ids: ArrayD<u32>,
    /// Target ids, shape (B, T).
    pub targets: ArrayD<u32>,
    /// 1 where a target counts, 0 elsewhere; `None` when every position counts.
    pub mask: Option<ArrayD<F>>,
    /// Number of counted targets.
    pub loss_tokens: usize,
}

impl<F: Float> Batch<F> {
    /// Stacks `seqs`, right-padding with `pad` to the longest (padding never counts in the loss,
    /// and causal attention keeps it from changing the earlier positions).
    pub fn new(seqs: &[&Sequence], pad: u32) -> Self {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![pad; b * t];
        let mut targets = vec![pad; b * t];
        let mut mask = vec![F::zero(); b * t];
        let mut loss_tokens = 0;
        for (row, s) in seqs.iter().enumerate() {
            let n = s.len();
            ids[row * t..row * t + n].copy_from_slice(&s.tokens[..n]);
            targets[row * t..row * t + n].copy_from_slice(&s.tokens[1..]);
            // Target j is tokens[j + 1]: it counts when j + 1 >= loss_from.
            mask[row * t + s.loss_from.max(1) - 1..row * t + n].fill(F::one());
            loss_tokens += s.loss_tokens();
        }
        let shape = IxDyn(&[b, t]);
        let full = loss_tokens == b * t;
        Batch {
            ids: ArrayD::from_shape_vec(shape.clone(), ids).expect("b * t ids"),
            targets: ArrayD::from_shape_vec(shape.clone(), targets).expect("b * t targets"),
            mask: (!full).then(|| ArrayD::from_shape_vec(shape, mask).expect("b * t mask")),
            loss_tokens,
        }
    }

    /// Positions fed to the model, padding included.
    pub fn positions(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_differ_by_epoch() {
        let a = epoch_permutation(7, 0, 100);
        let b = epoch_permutation(7, 1, 100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_permutation(7, 0, 100));
    }

    #[test]
    fn take_crosses_epochs_and_resumes_from_a_cursor() {
        let mut order = DataOrder::new(3, 5);
        let mut cursor = DataCursor::default();
        let first: Vec<usize> = (0..4).flat_map(|_| order.take(&mut cursor, 3)).collect();
        assert_eq!(cursor, DataCursor { epoch: 2, position: 2 });
        let e0 = epoch_permutation(3, 0, 5);
        let e1 = epoch_permutation(3, 1, 5);
        assert_eq!(&first[..5], &e0[..]);
        assert_eq!(&first[5..10], &e1[..]);
        // A fresh order resumed from a saved cursor continues identically.
        let mut again = DataOrder::new(3, 5);
        let mut c = DataCursor::default();
        again.take(&mut c, 7);
        let mut resumed = DataOrder::new(3, 5);
        assert_eq!(resumed.take(&mut c.clone(), 5), again.take(&mut c, 5));
    }

    #[test]
    fn batch_masks_only_the_completion_and_pads() {
        let a = Sequence { tokens: vec![1, 5, 6, 7, 2], loss_from: 3 }; // reads 4, targets 7, 2 count
        let b = Sequence { tokens: vec![1, 5, 2], loss_from: 2 };
        let batch = Batch::<f64>::new(&[&a, &b], 0);
        assert_eq!(batch.ids.shape(), &[2, 4]);
        assert_eq!(batch.ids.as_slice().unwrap(), &[1, 5, 6, 7, 1, 5, 0, 0]);
        assert_eq!(batch.targets.as_slice().unwrap(), &[5, 6, 7, 2, 5, 2, 0, 0]);
        let mask = batch.mask.unwrap();
        assert_eq!(mask.as_slice().unwrap(), &[0., 0., 1., 1., 0., 1., 0., 0.]);
        assert_eq!(batch.loss_tokens, 3);
    }

    #[test]
    fn full_batches_need_no_mask() {
        let a = Sequence { tokens: vec![3, 4, 5], loss_from: 1 };
        let batch = Batch::<f32>::new(&[&a, &a], 0);
        assert!(batch.mask.is_none());
        assert_eq!(batch.loss_tokens, 4);
    }
}
