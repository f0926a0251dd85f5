//! Evaluation: held-out loss, and task accuracy from greedy decoding scored by the task's reward.

use std::path::Path;

use pglm_autograd::{Float, Tape};
use pglm_model::tokenizer::Tokenizer;
use pglm_model::{Gpt, InferScratch, KvCache};
use pglm_rewards::{Reward, RewardInput, Score};
use serde_json::Value;

use crate::TrainError;
use crate::config::TaskEvalConfig;
use crate::data::{Batch, Sequence};
use crate::sft::{encode_prompt, markers};

/// Token-weighted mean loss of `seqs` (no dropout, no gradient), in micro-batches of `micro`.
pub fn eval_loss<F: Float>(
    model: &Gpt<F>,
    seqs: &[Sequence],
    micro: usize,
    pad: u32,
) -> Result<f64, TrainError> {
    let refs: Vec<&Sequence> = seqs.iter().collect();
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in refs.chunks(micro.max(1)) {
        let batch = Batch::<F>::new(chunk, pad);
        if batch.loss_tokens == 0 {
            continue;
        }
        let mut tape = Tape::no_grad();
        let l = model.loss(&mut tape, &batch.ids, &batch.targets, batch.mask.as_ref(), None)?;
        // Σ_t ℓ_t of this chunk = its mean times its token count.
        sum += Float::to_f64(*tape.value(l).iter().next().expect("a scalar loss")) * batch.loss_tokens as f64;
        count += batch.loss_tokens;
    }
    Ok(if count == 0 { f64::NAN } else { sum / count as f64 })
}

/// Greedy completions of `prompts` (token ids, BOS included): argmax (lowest id on ties) until
/// `eos`, `max_new` tokens, or the context is full. The EOS is not returned.
pub fn greedy_decode<F: Float>(
    model: &Gpt<F>,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
) -> Result<Vec<Vec<u32>>, TrainError> {
    const SLOTS: usize = 32;
    let cfg = model.config();
    let v = cfg.vocab_size;
    let mut out = Vec::with_capacity(prompts.len());
    // One scratch for every chunk (it holds the packed weights, made once per call), sized for the
    // largest prefill.
    let max_rows = prompts.chunks(SLOTS).map(|c| c.iter().map(Vec::len).sum::<usize>().max(c.len())).max();
    let mut scratch = InferScratch::<F>::new(cfg, max_rows.unwrap_or(0));
    for chunk in prompts.chunks(SLOTS) {
        let mut cache = KvCache::<F>::new(cfg, chunk.len(), cfg.context_length);
        let prefill: Vec<(usize, u32)> =
            chunk.iter().enumerate().flat_map(|(s, p)| p.iter().map(move |&t| (s, t))).collect();
        let mut logits = vec![F::zero(); prefill.len() * v];
        model.forward_cached(&mut cache, &mut scratch, &prefill, &mut logits)?;
        // The last prefill row of each slot holds its first next-token logits.
        let mut next: Vec<u32> = Vec::with_capacity(chunk.len());
        let mut row = 0;
        for p in chunk {
            row += p.len();
            next.push(argmax(&logits[(row - 1) * v..row * v]));
        }
        let mut done: Vec<Vec<u32>> = vec![Vec::new(); chunk.len()];
        let mut active: Vec<usize> = (0..chunk.len()).collect();
        while !active.is_empty() {
            active.retain(|&s| {
                let t = next[s];
                if t == eos || done[s].len() >= max_new {
                    return false;
                }
                done[s].push(t);
                done[s].len() < max_new && cache.len(s) < cache.capacity()
            });
            if active.is_empty() {
                break;
            }
            let rows: Vec<(usize, u32)> = active.iter().map(|&s| (s, next[s])).collect();
            model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits[..rows.len() * v])?;
            for (r, &s) in active.iter().enumerate() {
                next[s] = argmax(&logits[r * v..(r + 1) * v]);
            }
        }
        out.extend(done);
    }
    Ok(out)
}

/// The index of the largest value; the first one on ties.
fn argmax<F: Float>(row: &[F]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// A task's test prompts, ready to decode, and its reward.
pub struct TaskEval {
    reward: Box<dyn Reward>,
    prompts: Vec<(String, Vec<u32>, Value)>,
    max_new_tokens: usize,
    eos: u32,
}

/// The outcome of a task evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskScore {
    /// Fraction of prompts whose completion scores at least 1 (correct, for every built-in task).
    pub accuracy: f64,
    /// Mean reward over the scorable completions.
    pub reward: f64,
}

impl TaskEval {
    /// Builds the task, reads its test file (checked against its reward) and tokenizes the first
    /// `examples` prompts; a prompt that leaves no room in `context_length` is an error.
    pub fn load(
        cfg: &TaskEvalConfig,
        tokenizer: &Tokenizer,
        context_length: usize,
    ) -> Result<Self, TrainError> {
        let task = pglm_rewards::builtin_task(&cfg.name, &cfg.settings)?;
        let reward = task.reward();
        let records = pglm_rewards::dataset::read_dataset(&cfg.test, reward.as_ref())?;
        let (_, eos) = markers(tokenizer)?;
        let prompts = records
            .into_iter()
            .take(cfg.examples)
            .map(|r| {
                let ids = encode_prompt(tokenizer, &r.prompt, &cfg.test, r.line)?;
                if ids.len() >= context_length {
                    return Err(too_long(&cfg.test, r.line, ids.len(), context_length));
                }
                Ok((r.prompt, ids, r.reference))
            })
            .collect::<Result<_, _>>()?;
        Ok(TaskEval { reward, prompts, max_new_tokens: cfg.max_new_tokens, eos })
    }

    /// Decodes every prompt greedily and scores the completions.
    pub fn evaluate<F: Float>(&self, model: &Gpt<F>, tokenizer: &Tokenizer) -> Result<TaskScore, TrainError> {
        let ids: Vec<Vec<u32>> = self.prompts.iter().map(|(_, ids, _)| ids.clone()).collect();
        let completions = greedy_decode(model, &ids, self.max_new_tokens, self.eos)?;
        let texts: Vec<String> = completions
            .iter()
            .map(|c| tokenizer.decode(c).map_err(TrainError::from))
            .collect::<Result<_, _>>()?;
        let inputs: Vec<RewardInput<'_>> = self
            .prompts
            .iter()
            .zip(&texts)
            .zip(&completions)
            .map(|(((p, _, r), t), c)| RewardInput::new(p, t, r).with_len(c.len()))
            .collect();
        let (mut correct, mut sum, mut scored) = (0usize, 0.0, 0usize);
        for result in self.reward.score_batch(&inputs) {
            if let Score::Value(v) = result?.total {
                correct += usize::from(v >= 1.0);
                sum += v;
                scored += 1;
            }
        }
        let n = self.prompts.len().max(1) as f64;
        Ok(TaskScore {
            accuracy: correct as f64 / n,
            reward: if scored == 0 { f64::NAN } else { sum / scored as f64 },
        })
    }
}

fn too_long(path: &Path, line: usize, length: usize, context: usize) -> TrainError {
    TrainError::ExampleTooLong { path: path.into(), line, length, limit: context - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pglm_model::GptConfig;

    #[test]
    fn greedy_decode_matches_full_forward_argmax() {
        let model = Gpt::<f64>::new(GptConfig::new(7, 16, 1, 2, 8), 3).unwrap();
        let prompts = vec![vec![1, 4, 5], vec![1, 3]];
        let out = greedy_decode(&model, &prompts, 5, 99).unwrap();
        for (p, c) in prompts.iter().zip(&out) {
            assert_eq!(c.len(), 5);
            // Recompute each token with the tape's full forward pass.
            let mut seq = p.clone();
            for &t in c {
                let ids = ndarray::Array::from_shape_vec(vec![1, seq.len()], seq.clone()).unwrap();
                let mut tape = Tape::no_grad();
                let h = model.forward(&mut tape, &ids, None).unwrap();
                let logits = model.logits(&mut tape, h);
                let row: Vec<f64> = tape.value(logits).iter().skip((seq.len() - 1) * 7).copied().collect();
                assert_eq!(argmax(&row), t);
                seq.push(t);
            }
        }
    }
}
