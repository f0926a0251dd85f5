//! Rollouts: sample a group of completions per prompt, score them, and (with dynamic sampling)
//! replace the groups that carry no signal. The result is what the update needs, laid out as
//! padded `(N, W)` arrays over the full sequences `[BOS] prompt completion`, where position `p`
//! predicts token `p + 1` and only the completion's positions are in the mask.

use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, ArrayD};
use pglm_autograd::Float;
use pglm_model::Gpt;
use pglm_model::tokenizer::Tokenizer;
use pglm_rewards::{OverlongPenalty, Reward, RewardInput, Score};
use pglm_sampler::{Completion, FinishReason, Prompt, Sampler, SamplingParams};
use serde_json::Value;

use crate::TrainError;
use crate::data::{DataCursor, DataOrder, mix_seed};
use crate::rl::config::RlConfig;
use crate::sft::encode_prompt;

/// A training prompt.
#[derive(Clone, Debug)]
pub struct TaskPrompt {
    /// The prompt text (what the reward sees).
    pub text: String,
    /// `[BOS] prompt` token ids (what the policy sees).
    pub ids: Vec<u32>,
    /// The example's reference data (what the reward checks against).
    pub reference: Value,
}

/// Reads the task's prompts, checks them against its reward, and tokenizes them; a prompt that
/// leaves no room for a completion in `context_length` is an error naming its line.
pub fn load_prompts(
    path: &Path,
    reward: &dyn Reward,
    tokenizer: &Tokenizer,
    context_length: usize,
) -> Result<Vec<TaskPrompt>, TrainError> {
    let records = pglm_rewards::dataset::read_dataset(path, reward)?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let ids = encode_prompt(tokenizer, &r.prompt, path, r.line)?;
        if ids.len() >= context_length {
            return Err(TrainError::ExampleTooLong {
                path: path.into(),
                line: r.line,
                length: ids.len(),
                limit: context_length - 1,
            });
        }
        out.push(TaskPrompt { text: r.prompt, ids, reference: r.reference });
    }
    if out.is_empty() {
        return Err(TrainError::config(
            "task.train",
            format!("a file with prompts, {} has none", path.display()),
        ));
    }
    Ok(out)
}

/// One scored completion.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Index of its prompt in the training prompts.
    pub prompt: usize,
    /// What the sampler produced (tokens, text, finish reason, log-probabilities).
    pub completion: Completion,
    /// The reward used for the advantages (overlong shaping included); `None`: unscorable.
    pub reward: Option<f64>,
    /// Each reward component (as the task's reward names them).
    pub components: Vec<Option<f64>>,
}

/// The groups of one step (each `group_size` samples of one prompt, contiguous) and how they
/// were obtained.
#[derive(Clone, Debug, Default)]
pub struct Rollout {
    /// The kept samples, grouped.
    pub samples: Vec<Sample>,
    /// Groups sampled over all rounds.
    pub groups_sampled: usize,
    /// Groups sampled whose rewards all agreed (no signal for the group estimators).
    pub groups_flat: usize,
    /// Sampling rounds used.
    pub rounds: usize,
    /// Seconds generating.
    pub gen_secs: f64,
    /// Seconds scoring.
    pub score_secs: f64,
    /// Completion tokens generated over all rounds (kept or not).
    pub tokens_generated: usize,
}

/// Are the rewards of a group all equal (or all unscorable)?
fn flat(group: &[Sample]) -> bool {
    let mut values = group.iter().filter_map(|s| s.reward);
    match values.next() {
        None => true,
        Some(first) => values.all(|v| v == first),
    }
}

/// What a rollout needs besides the policy.
pub struct RolloutContext<'a> {
    /// The run's config.
    pub config: &'a RlConfig,
    /// The training prompts.
    pub prompts: &'a [TaskPrompt],
    /// The task's reward.
    pub reward: &'a dyn Reward,
    /// The tokenizer (detokenizes for the reward).
    pub tokenizer: &'a Tokenizer,
}

/// Samples `rollout.prompts_per_step` groups for step `step` (0-based), drawing prompts from the
/// data order. With dynamic sampling, groups whose rewards agree are dropped and new prompts are
/// drawn, for at most `filter.max_rounds` rounds; the samples then hold the groups kept.
pub fn collect<F: Float>(
    ctx: &RolloutContext<'_>,
    policy: &Gpt<F>,
    sampler: &mut Sampler<F>,
    order: &mut DataOrder,
    cursor: &mut DataCursor,
    step: u64,
) -> Result<Rollout, TrainError> {
    let cfg = ctx.config;
    let (want, g) = (cfg.rollout.prompts_per_step, cfg.rollout.group_size);
    let rounds = if cfg.filter.dynamic_sampling { cfg.filter.max_rounds } else { 1 };
    let overlong = match cfg.filter.overlong_buffer {
        Some(buffer) => {
            Some(OverlongPenalty::new(cfg.rollout.max_new_tokens, buffer)?.factor(cfg.filter.overlong_factor))
        }
        None => None,
    };
    let mut out = Rollout::default();
    for round in 0..rounds {
        let need = want - out.samples.len() / g;
        if need == 0 {
            break;
        }
        out.rounds += 1;
        let ids = order.take(cursor, need);
        let params = SamplingParams {
            n: g,
            max_new_tokens: cfg.rollout.max_new_tokens,
            temperature: cfg.rollout.temperature,
            top_k: cfg.rollout.top_k,
            top_p: cfg.rollout.top_p,
            min_p: cfg.rollout.min_p,
            seed: mix_seed(&[cfg.run.seed, step, round as u64]),
            ..SamplingParams::default()
        };
        let prompts: Vec<Prompt> =
            ids.iter().map(|&i| Prompt { id: i as u64, tokens: &ctx.prompts[i].ids }).collect();
        let t0 = Instant::now();
        let groups = sampler.generate_prompts(policy, &prompts, &params, ctx.tokenizer)?;
        out.gen_secs += t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let samples = score(ctx, &ids, groups, overlong.as_ref())?;
        out.score_secs += t1.elapsed().as_secs_f64();
        out.tokens_generated += samples.iter().map(|s| s.completion.tokens.len()).sum::<usize>();
        for group in samples.chunks(g) {
            out.groups_sampled += 1;
            let is_flat = flat(group);
            out.groups_flat += usize::from(is_flat);
            // The last round keeps whatever it has: an update on fewer groups beats none.
            if !cfg.filter.dynamic_sampling || !is_flat {
                out.samples.extend_from_slice(group);
            }
        }
    }
    Ok(out)
}

/// Scores each completion with the task's reward (in parallel, in order) and adds the overlong
/// penalty to the scorable ones.
fn score(
    ctx: &RolloutContext<'_>,
    ids: &[usize],
    groups: Vec<Vec<Completion>>,
    overlong: Option<&OverlongPenalty>,
) -> Result<Vec<Sample>, TrainError> {
    let flat: Vec<(usize, Completion)> =
        ids.iter().zip(groups).flat_map(|(&i, group)| group.into_iter().map(move |c| (i, c))).collect();
    let inputs: Vec<RewardInput<'_>> = flat
        .iter()
        .map(|(i, c)| {
            let p = &ctx.prompts[*i];
            RewardInput::new(&p.text, &c.text, &p.reference).with_len(c.tokens.len())
        })
        .collect();
    let scored = ctx.reward.score_batch(&inputs);
    drop(inputs);
    flat.into_iter()
        .zip(scored)
        .map(|((prompt, completion), scored)| {
            let scored = scored?;
            let penalty = overlong.map_or(0.0, |o| o.penalty(completion.tokens.len()));
            let reward = match scored.total {
                Score::Value(v) => Some(v + penalty),
                Score::Unscorable => None,
            };
            let components = scored.components.iter().map(|s| s.value()).collect();
            Ok(Sample { prompt, completion, reward, components })
        })
        .collect()
}

/// The rollout as tensors: token ids and targets `(N, W)`, and per-position arrays.
pub struct RolloutBatch<F> {
    /// Inputs: the sequence without its last token, right-padded.
    pub ids: ArrayD<u32>,
    /// Targets: the sequence shifted by one.
    pub targets: ArrayD<u32>,
    /// 1 at the positions that predict a completion token (EOS included) and get a gradient.
    pub mask: Array2<f64>,
    /// The same mask before `filter.mask_truncated` (for statistics and baselines).
    pub full_mask: Array2<f64>,
    /// The sampler's log-probabilities at the masked positions (0 elsewhere).
    pub sampler_logp: Array2<F>,
}

/// Per-completion-token values laid out as the batch: completion token `j` of sample `i` sits at
/// position `P + j` and is predicted at `P - 1 + j` (`P` its prompt's length), where
/// `value(i, j)` goes; 0 elsewhere.
pub fn per_token<F: Float>(
    samples: &[Sample],
    prompts: &[TaskPrompt],
    width: usize,
    value: impl Fn(usize, usize) -> f64,
) -> Array2<F> {
    let mut out = Array2::from_elem((samples.len(), width), F::zero());
    for (i, s) in samples.iter().enumerate() {
        let start = prompts[s.prompt].ids.len() - 1;
        for j in 0..s.completion.tokens.len() {
            out[[i, start + j]] = F::of(value(i, j));
        }
    }
    out
}

/// Lays out `samples` as a batch; `pad` fills the padding, `mask_truncated` removes completions cut
/// by the length limit from the gradient.
pub fn batch<F: Float>(
    samples: &[Sample],
    prompts: &[TaskPrompt],
    pad: u32,
    mask_truncated: bool,
) -> RolloutBatch<F> {
    let n = samples.len();
    let width = samples
        .iter()
        .map(|s| prompts[s.prompt].ids.len() + s.completion.tokens.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = ArrayD::from_elem(vec![n, width], pad);
    let mut targets = ArrayD::from_elem(vec![n, width], pad);
    for (i, s) in samples.iter().enumerate() {
        let p = &prompts[s.prompt].ids;
        let seq: Vec<u32> = p.iter().chain(&s.completion.tokens).copied().collect();
        for t in 0..seq.len() - 1 {
            ids[[i, t]] = seq[t];
            targets[[i, t]] = seq[t + 1];
        }
    }
    let full_mask = per_token(samples, prompts, width, |_, _| 1.0);
    let sampler_logp =
        per_token(samples, prompts, width, |i, j| f64::from(samples[i].completion.logprobs[j]));
    let mut mask = full_mask.clone();
    if mask_truncated {
        for (i, s) in samples.iter().enumerate() {
            if s.completion.finish_reason == FinishReason::Length {
                mask.row_mut(i).fill(0.0);
            }
        }
    }
    RolloutBatch { ids, targets, mask, full_mask, sampler_logp }
}
