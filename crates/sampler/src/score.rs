//! Teacher-forced log-probabilities of given completions on the KV-cache path: what a reference
//! model (or any frozen model) assigns to a rollout, without a tape.
//!
//! The sequences of one GRPO group share their prompt, so the prompt runs once: it is prefilled in
//! one slot, whose cache is copied to the group's other slots, and only the completions' tokens
//! run per sequence. A rollout of `G` completions of `C` tokens after a prompt of `P` tokens then
//! costs `P + G·C` token positions instead of `G·(P + C)` (at 16 prompts of 8 tokens × 8
//! completions of 32, 17.5% fewer). The products run in calls of many rows, the shape the decode
//! kernels are fastest at.
//!
//! Each row's logits are the same bits whatever else is in the call (see `pglm_model::KvCache`), so
//! for the model that sampled them these log-probabilities equal the sampler's own; against the
//! tape's forward (`Gpt::token_log_probs`) they differ by rounding only.

use pglm_autograd::Float;
use pglm_model::{Gpt, GptConfig, InferScratch, KvCache};
use rayon::prelude::*;

use crate::SamplerError;
use crate::processors::{log_normalizer, log_softmax_from};

/// Rows per forward call: large enough for the products to run at full speed, small enough for
/// the logits and work buffers to stay a few MB at the larger configs.
const ROWS: usize = 1024;

/// Buffers for scoring, kept across calls (a reference model's packed weights are made once).
pub struct Scorer<F: Float> {
    config: GptConfig,
    slots: usize,
    cache: KvCache<F>,
    scratch: InferScratch<F>,
    logits: Vec<F>,
    /// Per row of a call: its logits' normalizer (see `log_normalizer`), `None` when not finite.
    norms: Vec<Option<(f64, f64)>>,
    rows: Vec<(usize, u32)>,
    /// For each row of `rows`: the log-probabilities its logits give, if any.
    targets: Vec<Option<Target>>,
}

/// What one row's logits predict.
#[derive(Clone, Copy)]
enum Target {
    /// The first completion token of each of pairs `start..end` (a shared prompt's last row).
    FirstTokens(usize, usize),
    /// Token `k` of the completion of pair `pair`.
    Token(usize, usize),
}

impl<F: Float> Scorer<F> {
    /// A scorer for models of shape `config`, running up to `slots` sequences at once.
    pub fn new(config: &GptConfig, slots: usize) -> Self {
        let slots = slots.max(1);
        Scorer {
            config: config.clone(),
            slots,
            cache: KvCache::new(config, slots, 1),
            scratch: InferScratch::new(config, ROWS),
            logits: vec![F::zero(); ROWS * config.vocab_size],
            norms: vec![None; ROWS],
            rows: Vec::with_capacity(ROWS),
            targets: Vec::with_capacity(ROWS),
        }
    }

    /// `log softmax(z_t / T)[completion[t]]` for every token of every `(prompt, completion)`
    /// pair, the sampler's convention (full vocabulary, no truncation). Consecutive pairs whose
    /// prompts are equal share one prefill.
    ///
    /// # Errors
    /// An empty prompt, a pair longer than the context, an out-of-vocabulary token, non-finite
    /// logits, or a model of another shape.
    pub fn score(
        &mut self,
        model: &Gpt<F>,
        pairs: &[(&[u32], &[u32])],
        temperature: f32,
    ) -> Result<Vec<Vec<f32>>, SamplerError> {
        if model.config() != &self.config {
            return Err(SamplerError::ConfigMismatch);
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(SamplerError::Params { field: "temperature", expected: "positive and finite" });
        }
        let context = self.config.context_length;
        let mut need = 1;
        for (index, (p, c)) in pairs.iter().enumerate() {
            if p.is_empty() {
                return Err(SamplerError::EmptyPrompt { index });
            }
            // The last completion token is only predicted, never fed.
            let length = p.len() + c.len().saturating_sub(1);
            if length > context {
                return Err(SamplerError::SequenceTooLong { index, length, context_length: context });
            }
            need = need.max(length);
        }
        if self.cache.capacity() < need {
            self.cache = KvCache::new(&self.config, self.slots, need);
        }
        let mut out: Vec<Vec<f32>> = pairs.iter().map(|(_, c)| vec![0.0; c.len()]).collect();
        let inv_t = 1.0 / f64::from(temperature);
        rayon::scope(|_| {
            for wave in (0..pairs.len()).step_by(self.slots) {
                let end = (wave + self.slots).min(pairs.len());
                self.score_wave(model, pairs, wave..end, inv_t, &mut out)?;
            }
            Ok(out)
        })
    }

    /// Pairs `range` in slots `0..range.len()`: the prompts' prefills, then the completions.
    fn score_wave(
        &mut self,
        model: &Gpt<F>,
        pairs: &[(&[u32], &[u32])],
        range: std::ops::Range<usize>,
        inv_t: f64,
        out: &mut [Vec<f32>],
    ) -> Result<(), SamplerError> {
        self.cache.reset_all();
        let first = range.start;
        // Runs of equal prompts: (first pair, end pair).
        let mut runs = Vec::new();
        let mut i = first;
        while i < range.end {
            let mut j = i + 1;
            while j < range.end && pairs[j].0 == pairs[i].0 {
                j += 1;
            }
            runs.push((i, j));
            i = j;
        }
        // Each run's prompt in its first slot; its last row predicts every completion's first token.
        self.rows.clear();
        self.targets.clear();
        for &(i, j) in &runs {
            let prompt = pairs[i].0;
            for (k, &tok) in prompt.iter().enumerate() {
                self.rows.push((i - first, tok));
                self.targets.push((k + 1 == prompt.len()).then_some(Target::FirstTokens(i, j)));
            }
        }
        self.run_rows(model, pairs, inv_t, out)?;
        for &(i, j) in &runs {
            for s in i + 1..j {
                self.cache.copy_slot(i - first, s - first);
            }
        }
        // Every completion's tokens but the last, each row predicting the next token.
        self.rows.clear();
        self.targets.clear();
        for (s, &(_, c)) in pairs[range.clone()].iter().enumerate() {
            for (k, &tok) in c.iter().enumerate().take(c.len().saturating_sub(1)) {
                self.rows.push((s, tok));
                self.targets.push(Some(Target::Token(first + s, k + 1)));
            }
        }
        self.run_rows(model, pairs, inv_t, out)
    }

    /// Runs `self.rows` in calls of at most [`ROWS`] rows and records the log-probabilities their
    /// `targets` name.
    fn run_rows(
        &mut self,
        model: &Gpt<F>,
        pairs: &[(&[u32], &[u32])],
        inv_t: f64,
        out: &mut [Vec<f32>],
    ) -> Result<(), SamplerError> {
        let vocab = self.config.vocab_size;
        for start in (0..self.rows.len()).step_by(ROWS) {
            let end = (start + ROWS).min(self.rows.len());
            let n = end - start;
            model.forward_cached(
                &mut self.cache,
                &mut self.scratch,
                &self.rows[start..end],
                &mut self.logits[..n * vocab],
            )?;
            // Each target row's normalizer, rows in parallel (the one pass over the vocabulary
            // that costs; every row is independent, so the thread count changes no bit).
            let logits = &self.logits;
            let targets = &self.targets[start..end];
            let norms = &mut self.norms[..n];
            norms.par_iter_mut().enumerate().with_min_len(16).for_each(|(r, norm)| {
                *norm = targets[r].and_then(|_| {
                    let row = logits[r * vocab..(r + 1) * vocab].iter().map(|&z| Float::to_f64(z) as f32);
                    row.clone().all(f32::is_finite).then(|| log_normalizer(row, inv_t))
                });
            });
            for (r, target) in targets.iter().enumerate() {
                let Some(target) = *target else { continue };
                let first_pair = match target {
                    Target::FirstTokens(start, _) | Target::Token(start, _) => start,
                };
                let Some(norm) = self.norms[r] else {
                    return Err(SamplerError::NonFiniteScore { index: first_pair });
                };
                let row = &self.logits[r * vocab..(r + 1) * vocab];
                let mut record = |pair: usize, k: usize| -> Result<(), SamplerError> {
                    let token = pairs[pair].1[k] as usize;
                    if token >= vocab {
                        return Err(pglm_model::ModelError::TokenOutOfRange {
                            id: token as u32,
                            vocab_size: vocab,
                        }
                        .into());
                    }
                    let z = Float::to_f64(row[token]) as f32;
                    out[pair][k] = log_softmax_from(z, norm, inv_t) as f32;
                    Ok(())
                };
                match target {
                    Target::FirstTokens(start, end) => {
                        for (pair, (_, c)) in pairs.iter().enumerate().take(end).skip(start) {
                            if !c.is_empty() {
                                record(pair, 0)?;
                            }
                        }
                    }
                    Target::Token(pair, k) => record(pair, k)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoText, Sampler, SamplingParams};
    use ndarray::{ArrayD, IxDyn};
    use pglm_autograd::Tape;

    fn model() -> Gpt<f32> {
        // Wide enough for the kernels' parallel paths; weights scaled so that logits spread.
        let mut m = Gpt::new(GptConfig::new(128, 48, 2, 4, 64), 3).unwrap();
        for (_, p) in m.params.iter_mut() {
            if p.name == "ln_f.weight" {
                p.value_mut().mapv_inplace(|w| w * 15.0);
            }
        }
        m
    }

    fn prompts() -> Vec<Vec<u32>> {
        vec![vec![1], vec![5, 9, 2, 40], vec![7, 7, 7, 3, 11, 60, 2]]
    }

    type Pairs = Vec<(Vec<u32>, Vec<u32>)>;

    /// (prompt, completion) pairs sampled from `m`, groups of 3, with the sampler's log-probs.
    fn sampled(m: &Gpt<f32>, temperature: f32) -> (Pairs, Vec<Vec<f32>>) {
        let params = SamplingParams { n: 3, max_new_tokens: 20, temperature, ..SamplingParams::default() };
        let groups =
            Sampler::new(m.config(), 4).generate(m, &prompts(), &params, &NoText::default()).unwrap();
        let mut pairs = Vec::new();
        let mut logprobs = Vec::new();
        for (p, group) in prompts().into_iter().zip(groups) {
            for c in group {
                pairs.push((p.clone(), c.tokens.clone()));
                logprobs.push(c.logprobs);
            }
        }
        (pairs, logprobs)
    }

    fn borrow(pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<(&[u32], &[u32])> {
        pairs.iter().map(|(p, c)| (&p[..], &c[..])).collect()
    }

    #[test]
    fn the_sampling_model_scores_its_completions_as_the_sampler_did() {
        let m = model();
        for temperature in [0.7, 1.0] {
            let (pairs, logprobs) = sampled(&m, temperature);
            let got = Scorer::new(m.config(), 5).score(&m, &borrow(&pairs), temperature).unwrap();
            for (g, l) in got.iter().zip(&logprobs) {
                assert_eq!(g.len(), l.len());
                for (a, b) in g.iter().zip(l) {
                    // Same logits bit for bit; at T = 1 the sampler takes its log-prob from the
                    // draw's own softmax, which may round differently.
                    assert!(if temperature == 1.0 { (a - b).abs() < 1e-6 } else { a == b }, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn scores_match_the_tape_and_do_not_depend_on_the_slots() {
        let m = model();
        let (pairs, _) = sampled(&m, 1.0);
        let one = Scorer::new(m.config(), 1).score(&m, &borrow(&pairs), 0.9).unwrap();
        let many = Scorer::new(m.config(), 7).score(&m, &borrow(&pairs), 0.9).unwrap();
        assert_eq!(one, many, "scores depend on how many sequences run at once");
        for ((p, c), got) in pairs.iter().zip(&one) {
            let seq: Vec<u32> = p.iter().chain(c).copied().collect();
            let t = seq.len() - 1;
            let ids = ArrayD::from_shape_vec(IxDyn(&[1, t]), seq[..t].to_vec()).unwrap();
            let targets = ArrayD::from_shape_vec(IxDyn(&[1, t]), seq[1..].to_vec()).unwrap();
            let mut tape = Tape::no_grad();
            let lp = m.token_log_probs(&mut tape, &ids, &targets, 0.9).unwrap();
            let tape_lp: Vec<f32> = tape.value(lp).iter().skip(p.len() - 1).copied().collect();
            assert_eq!(tape_lp.len(), got.len());
            for (a, b) in got.iter().zip(&tape_lp) {
                assert!((a - b).abs() < 1e-5, "cache path {a}, tape {b}");
            }
        }
    }

    #[test]
    fn bad_pairs_are_typed_errors() {
        let m = model();
        let mut s = Scorer::new(m.config(), 2);
        let long = vec![1u32; 48];
        let cases: [(&[u32], &[u32]); 3] = [(&[], &[1]), (&[1, 2], &long), (&[1], &[200])];
        let err = |pair: (&[u32], &[u32]), s: &mut Scorer<f32>| s.score(&m, &[pair], 1.0).unwrap_err();
        assert!(matches!(err(cases[0], &mut s), SamplerError::EmptyPrompt { index: 0 }));
        assert!(matches!(err(cases[1], &mut s), SamplerError::SequenceTooLong { length: 49, .. }));
        assert!(matches!(
            err(cases[2], &mut s),
            SamplerError::Model(pglm_model::ModelError::TokenOutOfRange { id: 200, .. })
        ));
        let other = Gpt::<f32>::new(GptConfig::new(128, 48, 1, 4, 64), 0).unwrap();
        assert!(matches!(s.score(&other, &[(&[1], &[2])], 1.0), Err(SamplerError::ConfigMismatch)));
        assert!(matches!(s.score(&m, &[(&[1], &[2])], 0.0), Err(SamplerError::Params { .. })));
        // An empty completion has nothing to score.
        assert_eq!(s.score(&m, &[(&[1], &[])], 1.0).unwrap(), vec![Vec::<f32>::new()]);
    }
}
