//! One row of logits to one token: the processors in their documented order, then the draw.

use pglm_autograd::Float;

use crate::SamplingParams;
use crate::processors::{self, TokenSet};

/// Per-row work buffers, sized to the vocabulary once (no allocation per token).
#[derive(Clone, Debug, Default)]
pub struct RowScratch {
    work: Vec<f32>,
    probs: Vec<f64>,
    idx: Vec<u32>,
}

impl RowScratch {
    /// Buffers for a vocabulary of `vocab_size` tokens.
    pub fn new(vocab_size: usize) -> Self {
        RowScratch {
            work: Vec::with_capacity(vocab_size),
            probs: Vec::with_capacity(vocab_size),
            idx: Vec::with_capacity(vocab_size),
        }
    }
}

/// A sampled token and its two log-probabilities (see [`crate::Completion`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The token id.
    pub token: u32,
    /// log softmax(z / T)[token] over the full vocabulary (T = 1 when greedy).
    pub logprob: f32,
    /// Its log-probability under the distribution sampled from (0 when greedy).
    pub sampled_logprob: f32,
}

/// Chooses the next token from the raw logits `z` of one row:
///
/// ```text
/// z' = repetition_penalty(z, seen)            (Hugging Face's order)
/// greedy (T = 0):  token = argmax z'
/// otherwise:       z' = top_k, then top_p, then min_p of (z' / T);  token ~ softmax(z') by inverse CDF at u
/// ```
///
/// `None` when the logits hold a NaN or ±∞ (a diverged model).
pub fn choose<F: Float>(
    z: &[F],
    params: &SamplingParams,
    seen: &TokenSet,
    u: f64,
    scratch: &mut RowScratch,
) -> Option<Choice> {
    let work = &mut scratch.work;
    work.clear();
    work.extend(z.iter().map(|&v| Float::to_f64(v) as f32));
    if !work.iter().all(|v| v.is_finite()) {
        return None;
    }
    let t = params.temperature;
    if t == 0.0 {
        processors::repetition_penalty(work, seen, params.repetition_penalty);
        let token = processors::argmax(work)?;
        let logprob = processors::log_softmax_at(scratch_raw(z, work), token, 1.0);
        return Some(Choice { token: token as u32, logprob: logprob as f32, sampled_logprob: 0.0 });
    }
    processors::repetition_penalty(work, seen, params.repetition_penalty);
    processors::temperature(work, t);
    processors::top_k(work, params.top_k, &mut scratch.idx);
    processors::top_p(work, params.top_p, &mut scratch.idx, &mut scratch.probs);
    processors::min_p(work, params.min_p);
    let (token, sampled) = processors::draw(work, u, &mut scratch.probs)?;
    // When nothing but the temperature touched the row, the sampled distribution is the policy,
    // and z / T computed here equals the policy's row: one softmax serves both.
    let logprob = if params.samples_the_policy() && t == 1.0 {
        sampled
    } else {
        processors::log_softmax_at(scratch_raw(z, work), token, 1.0 / t as f64)
    };
    Some(Choice { token: token as u32, logprob: logprob as f32, sampled_logprob: sampled as f32 })
}

/// The raw row as f32 again, reusing `buf` (the processors have overwritten it).
fn scratch_raw<'a, F: Float>(z: &[F], buf: &'a mut Vec<f32>) -> &'a [f32] {
    buf.clear();
    buf.extend(z.iter().map(|&v| Float::to_f64(v) as f32));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stream;

    /// Draws many tokens from fixed logits and compares the counts with softmax(z / T):
    /// Pearson's chi-square, 7 degrees of freedom, 0.999 quantile 24.32.
    fn chi_square_of_draws(temperature: f32) -> f64 {
        let z = [1.0f32, 0.5, 0.0, -0.5, -1.0, 2.0, 0.25, -2.0];
        let params = SamplingParams { temperature, ..SamplingParams::default() };
        let seen = TokenSet::new(z.len());
        let mut scratch = RowScratch::new(z.len());
        let stream = Stream::new(12345, 0, 0);
        let n = 200_000u64;
        let mut counts = [0u64; 8];
        for step in 0..n {
            let c = choose(&z, &params, &seen, stream.uniform(step), &mut scratch).unwrap();
            counts[c.token as usize] += 1;
        }
        let t = temperature as f64;
        let m = z.iter().map(|&v| v as f64 / t).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 / t - m).exp()).collect();
        let s: f64 = e.iter().sum();
        counts
            .iter()
            .zip(&e)
            .map(|(&c, &ei)| (c as f64 - n as f64 * ei / s).powi(2) / (n as f64 * ei / s))
            .sum()
    }

    #[test]
    fn temperature_sampling_matches_the_softmax() {
        for t in [1.0, 0.7, 1.5] {
            let chi2 = chi_square_of_draws(t);
            assert!(chi2 < 24.32, "T = {t}: chi2 = {chi2}");
        }
    }

    #[test]
    fn a_wrong_temperature_fails_the_chi_square() {
        // The test above has power: sampling at T = 1 judged against T = 0.9 is rejected.
        let z = [1.0f32, 0.5, 0.0, -0.5, -1.0, 2.0, 0.25, -2.0];
        let params = SamplingParams::default();
        let (seen, mut scratch, stream) = (TokenSet::new(8), RowScratch::new(8), Stream::new(1, 0, 0));
        let n = 200_000u64;
        let mut counts = [0f64; 8];
        for step in 0..n {
            counts[choose(&z, &params, &seen, stream.uniform(step), &mut scratch).unwrap().token as usize] +=
                1.0;
        }
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 / 0.9).exp()).collect();
        let s: f64 = e.iter().sum();
        let chi2: f64 = counts
            .iter()
            .zip(&e)
            .map(|(&c, &ei)| (c - n as f64 * ei / s).powi(2) / (n as f64 * ei / s))
            .sum();
        assert!(chi2 > 24.32, "chi2 = {chi2}");
    }

    #[test]
    fn policy_logprob_ignores_penalty_and_truncation() {
        let z = [3.0f32, 1.0, 0.0, -1.0];
        let mut seen = TokenSet::new(4);
        seen.insert(0);
        let params = SamplingParams {
            temperature: 0.5,
            top_k: 2,
            repetition_penalty: 1.3,
            ..SamplingParams::default()
        };
        let c = choose(&z, &params, &seen, 0.3, &mut RowScratch::new(4)).unwrap();
        let full = processors::log_softmax_at(&z, c.token as usize, 2.0);
        assert!((c.logprob as f64 - full).abs() < 1e-6);
        // The sampled distribution: penalised, tempered, top-2 of {3/1.3, 1} / 0.5 = {4.615, 2}.
        let kept = [3.0f64 / 1.3 / 0.5, 1.0 / 0.5];
        let lse = (kept[0].exp() + kept[1].exp()).ln();
        assert!((c.sampled_logprob as f64 - (kept[c.token as usize] - lse)).abs() < 1e-5);
    }

    #[test]
    fn greedy_takes_the_argmax_after_the_penalty() {
        let z = [2.0f32, 1.9, 0.0];
        let mut seen = TokenSet::new(3);
        let greedy = SamplingParams { temperature: 0.0, ..SamplingParams::default() };
        let c = choose(&z, &greedy, &seen, 0.99, &mut RowScratch::new(3)).unwrap();
        assert_eq!((c.token, c.sampled_logprob), (0, 0.0));
        assert!((c.logprob as f64 - processors::log_softmax_at(&z, 0, 1.0)).abs() < 1e-6);
        seen.insert(0);
        let penalised = SamplingParams { repetition_penalty: 1.2, ..greedy };
        assert_eq!(choose(&z, &penalised, &seen, 0.0, &mut RowScratch::new(3)).unwrap().token, 1);
    }

    #[test]
    fn non_finite_logits_are_refused() {
        let p = SamplingParams::default();
        let s = TokenSet::new(2);
        assert!(choose(&[0.0f32, f32::NAN], &p, &s, 0.5, &mut RowScratch::new(2)).is_none());
        assert!(choose(&[0.0f64, f64::INFINITY], &p, &s, 0.5, &mut RowScratch::new(2)).is_none());
    }
}
