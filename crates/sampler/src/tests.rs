//! Generation against the model: the cached loop against full forwards on the tape, the
//! log-probabilities against the trainer's recomputation, stops, and reproducibility.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::{Float, Tape};
use pglm_model::{Gpt, GptConfig};

use crate::processors::TokenSet;
use crate::{
    ByteTable, Completion, FinishReason, NoText, Prompt, RowScratch, Sampler, SamplerError, SamplingParams,
    Stream, choose,
};

/// A small model made more decisive than a fresh GPT-2 init (whose next-token distributions are
/// nearly flat): block weights x5 so that the blocks mix the residual stream, and the final layer
/// norm's gain x15 so that logits spread (mean log-prob of sampled tokens about -2.5).
fn model<F: Float>(config: GptConfig, seed: u64) -> Gpt<F> {
    let mut m = Gpt::new(config, seed).unwrap();
    for (_, p) in m.params.iter_mut() {
        let scale = match p.name.as_str() {
            "ln_f.weight" => 15.0,
            n if n.starts_with("h.") && n.ends_with(".weight") && !n.contains(".ln_") => 5.0,
            _ => 1.0,
        };
        p.value_mut().mapv_inplace(|w| w * F::of(scale));
    }
    m
}

fn small() -> GptConfig {
    GptConfig::new(64, 32, 2, 2, 32)
}

/// Wide enough that the model's kernels take their parallel paths at batch 16.
fn medium() -> GptConfig {
    GptConfig::new(128, 48, 2, 4, 64)
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1], vec![5, 9, 2, 40], vec![7, 7, 7, 3, 11, 60, 2], vec![33, 12]]
}

/// Logits (T, V) of a full forward (no cache) over `ids`.
fn full_logits<F: Float>(model: &Gpt<F>, ids: &[u32]) -> ArrayD<F> {
    let mut tape = Tape::no_grad();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, ids.len()]), ids.to_vec()).unwrap();
    let hidden = model.forward(&mut tape, &x, None).unwrap();
    let logits = model.logits(&mut tape, hidden);
    let v = tape.value(logits);
    v.clone().into_shape_with_order(IxDyn(&[ids.len(), model.config().vocab_size])).unwrap()
}

#[test]
fn greedy_equals_the_argmax_of_a_full_forward_at_each_step() {
    let m = model::<f64>(small(), 1);
    let params = SamplingParams { temperature: 0.0, max_new_tokens: 12, ..SamplingParams::default() };
    let groups = Sampler::new(m.config(), 3).generate(&m, &prompts(), &params, &NoText::default()).unwrap();
    for (p, group) in prompts().iter().zip(&groups) {
        let c = &group[0];
        assert_eq!((c.tokens.len(), c.finish_reason), (12, FinishReason::Length));
        let seq: Vec<u32> = p.iter().chain(&c.tokens).copied().collect();
        let logits = full_logits(&m, &seq[..seq.len() - 1]);
        for (i, &tok) in c.tokens.iter().enumerate() {
            let row = logits.index_axis(ndarray::Axis(0), p.len() - 1 + i);
            let argmax = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            assert_eq!(tok as usize, argmax, "prompt {p:?}, step {i}");
        }
    }
}

/// The reference: sample one completion with a full forward per step (no KV cache), same streams.
fn uncached<F: Float>(
    m: &Gpt<F>,
    prompt: &[u32],
    id: u64,
    sample: usize,
    params: &SamplingParams,
) -> Vec<u32> {
    let vocab = m.config().vocab_size;
    let stream = Stream::new(params.seed, id, sample as u64);
    let mut seen = TokenSet::new(vocab);
    prompt.iter().for_each(|&t| seen.insert(t));
    let mut scratch = RowScratch::new(vocab);
    let mut seq = prompt.to_vec();
    for step in 0..params.max_new_tokens {
        let logits = full_logits(m, &seq);
        let row: Vec<F> = logits.index_axis(ndarray::Axis(0), seq.len() - 1).iter().copied().collect();
        let c = choose(&row, params, &seen, stream.uniform(step as u64), &mut scratch).unwrap();
        seen.insert(c.token);
        seq.push(c.token);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn cached_and_uncached_generation_agree() {
    let m = model::<f64>(small(), 2);
    let params = SamplingParams {
        n: 3,
        max_new_tokens: 10,
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        min_p: 0.02,
        repetition_penalty: 1.2,
        seed: 5,
        ..SamplingParams::default()
    };
    let groups = Sampler::new(m.config(), 4).generate(&m, &prompts(), &params, &NoText::default()).unwrap();
    for (i, (p, group)) in prompts().iter().zip(&groups).enumerate() {
        for c in group {
            assert_eq!(
                c.tokens,
                uncached(&m, p, i as u64, c.sample, &params),
                "prompt {i} sample {}",
                c.sample
            );
        }
    }
}

/// log π(token) of every completion token, recomputed the trainer's way (on the tape).
fn trainer_logprobs(m: &Gpt<f32>, prompt: &[u32], c: &Completion, temperature: f64) -> Vec<f32> {
    let seq: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
    let t = seq.len() - 1;
    let ids = ArrayD::from_shape_vec(IxDyn(&[1, t]), seq[..t].to_vec()).unwrap();
    let targets = ArrayD::from_shape_vec(IxDyn(&[1, t]), seq[1..].to_vec()).unwrap();
    let mut tape = Tape::no_grad();
    let lp = m.token_log_probs(&mut tape, &ids, &targets, temperature).unwrap();
    tape.value(lp).iter().skip(prompt.len() - 1).copied().collect()
}

#[test]
fn returned_logprobs_equal_the_trainers_recomputation() {
    let m = model::<f32>(medium(), 3);
    for (temperature, top_k, top_p) in [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 10, 0.8)] {
        let params = SamplingParams {
            n: 4,
            max_new_tokens: 24,
            temperature,
            top_k,
            top_p,
            ..SamplingParams::default()
        };
        let groups =
            Sampler::new(m.config(), 8).generate(&m, &prompts(), &params, &NoText::default()).unwrap();
        let mut worst = 0.0f32;
        for (p, group) in prompts().iter().zip(&groups) {
            for c in group {
                let reference = trainer_logprobs(&m, p, c, temperature as f64);
                assert_eq!(reference.len(), c.logprobs.len());
                for (a, b) in c.logprobs.iter().zip(&reference) {
                    worst = worst.max((a - b).abs());
                }
                if params.samples_the_policy() {
                    // The same distribution: the same numbers at T = 1, to rounding otherwise.
                    for (a, b) in c.logprobs.iter().zip(&c.sampled_logprobs) {
                        assert!(if temperature == 1.0 { a == b } else { (a - b).abs() < 1e-5 });
                    }
                }
                if top_k > 0 {
                    // Truncation renormalises over fewer tokens: sampled log-probs are higher.
                    assert!(c.sampled_logprobs.iter().zip(&c.logprobs).all(|(s, l)| s >= l));
                }
            }
        }
        assert!(worst < 1e-5, "T = {temperature}: max |sampler − trainer| = {worst}");
    }
}

fn run(
    m: &Gpt<f32>,
    batch: usize,
    threads: usize,
    prompts: &[Prompt],
    params: &SamplingParams,
) -> Vec<Vec<Completion>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let detok = ByteTable { pieces: (0..128u8).map(|b| vec![b'a' + b % 26]).collect(), eos: Some(0) };
    pool.install(|| Sampler::new(m.config(), batch).generate_prompts(m, prompts, params, &detok).unwrap())
}

#[test]
fn a_call_whose_cache_would_not_fit_runs_in_waves_with_the_same_completions() {
    let m = model::<f32>(GptConfig::new(128, 64, 2, 4, 128), 5);
    let tokens: Vec<Vec<u32>> =
        (0..16u32).map(|i| (0..(2 + i % 5)).map(|j| (i * 17 + j * 5) % 128).collect()).collect();
    let prompts: Vec<Prompt> =
        tokens.iter().enumerate().map(|(i, t)| Prompt { id: i as u64, tokens: t }).collect();
    let params = SamplingParams { n: 8, max_new_tokens: 60, seed: 3, ..SamplingParams::default() };
    // 128 sequences of up to 64 positions: 16 MB of keys and values, so two waves of 64.
    assert_eq!(crate::generate::wave_size(m.config(), 4, 128, 128, 8, 64), 64);
    let waves = run(&m, 128, 2, &prompts, &params);
    assert_eq!(waves, run(&m, 16, 2, &prompts, &params));
    assert!(
        waves.iter().flatten().any(|c| c.tokens.len() == 60)
            && waves.iter().flatten().any(|c| c.tokens.len() < 60)
    );
}

#[test]
fn same_seed_same_completions_whatever_the_batch_order_and_threads() {
    let m = model::<f32>(medium(), 4);
    let tokens: Vec<Vec<u32>> =
        (0..6u32).map(|i| (0..(1 + 3 * i)).map(|j| (i * 31 + j * 7) % 128).collect()).collect();
    let prompts: Vec<Prompt> =
        tokens.iter().enumerate().map(|(i, t)| Prompt { id: 100 + i as u64, tokens: t }).collect();
    let params =
        SamplingParams { n: 3, max_new_tokens: 20, top_p: 0.95, seed: 11, ..SamplingParams::default() };
    let reference = run(&m, 1, 1, &prompts, &params);
    for (batch, threads) in [(16, 1), (16, 2), (1, 2), (4, 2), (5, 1)] {
        assert_eq!(run(&m, batch, threads, &prompts, &params), reference, "batch {batch}, {threads} threads");
    }
    // The prompts in reverse order: each keeps its completions (they follow its id, not its place).
    let reversed: Vec<Prompt> = prompts.iter().rev().copied().collect();
    let mut got = run(&m, 16, 2, &reversed, &params);
    got.reverse();
    assert_eq!(got, reference);
    // A different seed changes them.
    assert_ne!(run(&m, 16, 2, &prompts, &SamplingParams { seed: 12, ..params.clone() }), reference);
}

#[test]
fn a_group_shares_its_prompt_but_not_its_samples() {
    let m = model::<f32>(medium(), 5);
    let params = SamplingParams { n: 8, max_new_tokens: 16, ..SamplingParams::default() };
    let g8 =
        Sampler::new(m.config(), 16).generate(&m, &[vec![3u32, 4, 5]], &params, &NoText::default()).unwrap();
    let distinct: std::collections::HashSet<&Vec<u32>> = g8[0].iter().map(|c| &c.tokens).collect();
    assert!(distinct.len() > 1, "eight samples, all the same");
    // Sample j does not depend on the group size.
    let g3 = Sampler::new(m.config(), 2)
        .generate(&m, &[vec![3u32, 4, 5]], &SamplingParams { n: 3, ..params }, &NoText::default())
        .unwrap();
    assert_eq!(g3[0][..], g8[0][..3]);
}

#[test]
fn eos_and_stop_strings_end_completions() {
    let m = model::<f32>(small(), 6);
    // Token i is the two letters of i in base 26 (so stop strings straddle token boundaries).
    let pieces: Vec<Vec<u8>> = (0..64u8).map(|i| vec![b'a' + i / 26, b'a' + i % 26]).collect();
    let free = SamplingParams { max_new_tokens: 16, seed: 3, ..SamplingParams::default() };
    let open = ByteTable { pieces: pieces.clone(), eos: None };
    let c = &Sampler::new(m.config(), 2).generate(&m, &[vec![1u32, 2]], &free, &open).unwrap()[0][0];
    assert_eq!((c.tokens.len(), c.finish_reason), (16, FinishReason::Length));
    assert_eq!(c.text.len(), 32);

    // End-of-sequence: the same stream, stopped at the first occurrence of token 5's value.
    let eos = c.tokens[5];
    let first = c.tokens.iter().position(|&t| t == eos).unwrap();
    let closed = ByteTable { pieces: pieces.clone(), eos: Some(eos) };
    let e = &Sampler::new(m.config(), 2).generate(&m, &[vec![1u32, 2]], &free, &closed).unwrap()[0][0];
    assert_eq!(e.finish_reason, FinishReason::Eos);
    assert_eq!(e.tokens, c.tokens[..=first]);
    assert_eq!(e.text.as_bytes(), &c.text.as_bytes()[..2 * first], "the eos token adds no text");
    // ... unless told to ignore it.
    let ignoring = SamplingParams { stop_at_eos: false, ..free.clone() };
    assert_eq!(
        Sampler::new(m.config(), 2).generate(&m, &[vec![1u32, 2]], &ignoring, &closed).unwrap()[0][0],
        *c
    );

    // A stop string across the boundary of tokens 6 and 7.
    let stop = c.text[13..15].to_string();
    let at = c.text.find(&stop).unwrap();
    let params = SamplingParams { stop: vec!["zzzz".into(), stop.clone()], ..free };
    let s = &Sampler::new(m.config(), 2).generate(&m, &[vec![1u32, 2]], &params, &open).unwrap()[0][0];
    assert_eq!((s.finish_reason, s.stop.as_deref()), (FinishReason::Stop, Some(stop.as_str())));
    assert_eq!(s.text, c.text[..at]);
    assert_eq!(s.tokens, c.tokens[..at.div_ceil(2) + 1], "tokens up to the one completing the stop");
    assert_eq!(s.logprobs, c.logprobs[..s.tokens.len()]);
}

#[test]
fn completions_stop_when_the_context_is_full() {
    let m = model::<f32>(small(), 7);
    let prompt: Vec<u32> = (0..29).collect(); // context 32
    let params = SamplingParams { max_new_tokens: 10, ..SamplingParams::default() };
    let c = &Sampler::new(m.config(), 1).generate(&m, &[prompt], &params, &NoText::default()).unwrap()[0][0];
    assert_eq!((c.tokens.len(), c.finish_reason), (3, FinishReason::Length));
}

#[test]
fn bad_requests_are_typed_errors() {
    let m = model::<f32>(small(), 8);
    let mut s = Sampler::new(m.config(), 2);
    let p = SamplingParams::default();
    let no = NoText::default();
    assert!(matches!(s.generate(&m, &[vec![]], &p, &no), Err(SamplerError::EmptyPrompt { index: 0 })));
    assert!(matches!(s.generate(&m, &[vec![1; 32]], &p, &no), Err(SamplerError::PromptTooLong { .. })));
    assert!(matches!(s.generate(&m, &[vec![64]], &p, &no), Err(SamplerError::Model(_))));
    let bad = SamplingParams { top_p: 2.0, ..p.clone() };
    assert!(matches!(
        s.generate(&m, &[vec![1]], &bad, &no),
        Err(SamplerError::Params { field: "top_p", .. })
    ));
    let other = model::<f32>(medium(), 8);
    assert!(matches!(s.generate(&other, &[vec![1]], &p, &no), Err(SamplerError::ConfigMismatch)));
    // The sampler is still usable after errors.
    assert_eq!(
        s.generate(&m, &[vec![1]], &p, &no).unwrap()[0][0].tokens.len(),
        31,
        "context 32 minus the prompt"
    );
}
