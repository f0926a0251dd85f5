//! Gradient accumulation over micro-batches.
//!
//! The step's loss is the masked mean over all `N` loss tokens of the batch,
//! `L = (1/N) Σ_t ℓ_t`. Micro-batch `i` with `n_i` loss tokens computes its own masked mean
//! `L_i = (1/n_i) Σ_{t∈i} ℓ_t`, so `L = Σ_i (n_i / N) L_i` and `∇L = Σ_i (n_i / N) ∇L_i`: each
//! micro-batch backpropagates with the seed `n_i / N` instead of 1, and the accumulated gradient
//! equals the full batch's (up to rounding).

use ndarray::ArrayD;
use pglm_autograd::{Float, Tape};
use pglm_model::Gpt;

use crate::TrainError;
use crate::data::Batch;

/// What one accumulated step saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accumulated {
    /// `L = Σ_i (n_i / N) L_i`, the batch's masked-mean loss.
    pub loss: f64,
    /// `N`, the loss tokens of the whole batch.
    pub loss_tokens: usize,
    /// Positions fed to the model (padding included).
    pub positions: usize,
}

/// Zeroes the gradients of `model.params`, then accumulates the gradient of the whole batch's
/// masked-mean loss over `micro_batches`. `dropout_seed(i)` is micro-batch `i`'s dropout seed.
///
/// Runs on one of rayon's workers: each parallel op of the tape then costs a fork-join between
/// workers instead of a hand-over from outside the pool, and fills of a few hundred KB use both
/// threads (docs/PERFORMANCE.md).
pub fn accumulate_gradients<F: Float>(
    model: &mut Gpt<F>,
    micro_batches: &[Batch<F>],
    dropout_seed: impl Fn(usize) -> Option<u64> + Send,
) -> Result<Accumulated, TrainError> {
    rayon::scope(move |_| {
        model.params.zero_grad();
        let total: usize = micro_batches.iter().map(|b| b.loss_tokens).sum();
        let mut loss = 0.0;
        let mut positions = 0;
        for (i, batch) in micro_batches.iter().enumerate() {
            positions += batch.positions();
            if batch.loss_tokens == 0 {
                continue; // contributes nothing (and its mean would be 0/0)
            }
            let weight = batch.loss_tokens as f64 / total as f64; // n_i / N
            let mut tape = Tape::new();
            let l =
                model.loss(&mut tape, &batch.ids, &batch.targets, batch.mask.as_ref(), dropout_seed(i))?;
            let l_i = Float::to_f64(*tape.value(l).iter().next().expect("a scalar loss"));
            loss += weight * l_i;
            let grads = tape.backward_with(l, ArrayD::from_elem(tape.shape(l), F::of(weight)));
            drop(tape); // release the tape's shares of the weights before they are updated
            grads.accumulate_into(&mut model.params);
        }
        Ok(Accumulated { loss, loss_tokens: total, positions })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Sequence;
    use pglm_model::GptConfig;

    /// Sequences of varied lengths and loss spans, as SFT produces.
    fn sequences() -> Vec<Sequence> {
        (0..8u32)
            .map(|i| {
                let len = 4 + (i as usize * 3) % 7;
                let tokens = (0..len as u32).map(|j| (i * 7 + j * 3) % 11).collect();
                Sequence { tokens, loss_from: 1 + (i as usize % 3) }
            })
            .collect()
    }

    fn grads_with_micro(micro: usize) -> (f64, Vec<ArrayD<f64>>) {
        let mut model = Gpt::<f64>::new(GptConfig::new(11, 16, 2, 2, 8), 5).unwrap();
        let seqs = sequences();
        let refs: Vec<&Sequence> = seqs.iter().collect();
        let batches: Vec<Batch<f64>> = refs.chunks(micro).map(|c| Batch::new(c, 0)).collect();
        let acc = accumulate_gradients(&mut model, &batches, |_| None).unwrap();
        (acc.loss, model.params.iter().map(|(_, p)| p.grad.clone()).collect())
    }

    #[test]
    fn accumulated_gradient_equals_full_batch_gradient() {
        let (full_loss, full) = grads_with_micro(8);
        for micro in [1, 2, 4] {
            let (loss, grads) = grads_with_micro(micro);
            assert!((loss - full_loss).abs() < 1e-12, "micro {micro}: loss {loss} vs {full_loss}");
            for (g, f) in grads.iter().zip(&full) {
                let diff = (g - f).iter().fold(0.0f64, |m, d| m.max(d.abs()));
                assert!(diff < 1e-12, "micro {micro}: max gradient difference {diff}");
            }
        }
        assert!(full.iter().any(|g| g.iter().any(|&x| x != 0.0)));
    }
}
