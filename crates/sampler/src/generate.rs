//! Batched generation on the model's KV cache: a fixed pool of sequence slots, filled by
//! (prompt, sample) pairs as slots come free (continuous batching).
//!
//! One loop iteration:
//! 1. *admit*: give free slots to the next samples of the next prompts; the samples of one prompt
//!    admitted together share one prefill (the prompt runs once in the first slot, whose cache is
//!    then copied to the others) and draw their first tokens from its last row of logits;
//! 2. *decode*: one forward call appends the last token of every running sequence and returns its
//!    next-token logits; each sequence draws its next token from its own row;
//! 3. *retire*: finished sequences become [`Completion`]s and free their slots.
//!
//! A call whose sequences' keys and values would outgrow the CPU's cache fills only part of the
//! pool at a time, in waves of whole groups (see `CACHE_BUDGET`): each decode step reads every
//! running sequence's cache, and from memory attention waits on those reads.
//!
//! The model computes each row the same way whatever else is in the batch (see
//! `pglm_model::KvCache`) and each sequence draws from its own [`Stream`], so a completion depends
//! only on (model, prompt, prompt id, sample index, params), not on the pool size, the order of the
//! prompts or the thread count.

use pglm_autograd::Float;
use pglm_model::{Gpt, GptConfig, InferScratch, KvCache, ModelError};
use rayon::prelude::*;

use crate::choose::{RowScratch, choose};
use crate::processors::TokenSet;
use crate::text::{Detokenize, StopStrings};
use crate::{Completion, FinishReason, SamplerError, SamplingParams, Stream};

/// A prompt and the id its random streams derive from.
#[derive(Clone, Copy, Debug)]
pub struct Prompt<'a> {
    /// Its id (e.g. its index in the dataset): the same id and seed give the same completions.
    pub id: u64,
    /// Its token ids (at least one).
    pub tokens: &'a [u32],
}

/// Rows per prefill forward call at least (prompts are processed in chunks of this many tokens).
const PREFILL_ROWS: usize = 256;

/// Parallel sampling pays off from this many rows per step.
const PAR_ROWS: usize = 4;

/// Bytes of keys and values that the running sequences may fill at most, when a call could run
/// more. Each decode step reads every running sequence's keys and values: at config S a GRPO
/// step's 128 sequences of 40 positions fill 10 MB, which on the 2-core machine of
/// `docs/PERFORMANCE.md` (its 32 MB L3 shared with other tenants) came from memory, each head of
/// attention waiting on its reads. Run as two waves of 64 they stayed cached: generation took
/// 23.4 ms instead of 25.6 (medians of 16 interleaved runs), with the same bits.
const CACHE_BUDGET: usize = 8 << 20;

/// The fewest sequences a wave runs: below this a decode step's matrix products, with fewer rows
/// to share each weight, lose more than the cache gains (at config S, waves of 32 sequences
/// generated more slowly than waves of 64).
const MIN_WAVE: usize = 64;

/// How many of a call's `total` sequences (`n` per prompt, `need` positions each) run at once:
/// all of them (up to `max_batch`) unless their keys and values exceed [`CACHE_BUDGET`]; then
/// equal waves of whole groups, each within the budget, as long as a wave keeps [`MIN_WAVE`]
/// sequences. Which sequences run together never changes a completion (see the module docs).
pub(crate) fn wave_size(
    config: &GptConfig,
    bytes: usize,
    max_batch: usize,
    total: usize,
    n: usize,
    need: usize,
) -> usize {
    let per_sequence = 2 * config.n_layer * config.n_embd * need * bytes;
    let fit = CACHE_BUDGET / per_sequence.max(1);
    if total.min(max_batch) <= fit || fit < MIN_WAVE {
        return max_batch;
    }
    let waves = total.div_ceil(fit);
    total.div_ceil(waves).next_multiple_of(n).max(MIN_WAVE).min(max_batch)
}

/// The state of one slot: the sequence running in it, if any.
struct Seq {
    active: bool,
    /// Index of its prompt in the call.
    prompt: usize,
    prompt_id: u64,
    sample: usize,
    prompt_len: usize,
    stream: Stream,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    sampled: Vec<f32>,
    text: Vec<u8>,
    seen: TokenSet,
    scratch: RowScratch,
    /// Its row in the current decode call.
    row: usize,
    /// Set when finished: the reason, and which stop string matched.
    done: Option<(FinishReason, Option<usize>)>,
    /// The model's logits were not finite.
    failed: bool,
}

impl Seq {
    fn new(vocab: usize) -> Self {
        Seq {
            active: false,
            prompt: 0,
            prompt_id: 0,
            sample: 0,
            prompt_len: 0,
            stream: Stream::new(0, 0, 0),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            sampled: Vec::new(),
            text: Vec::new(),
            seen: TokenSet::new(vocab),
            scratch: RowScratch::new(vocab),
            row: 0,
            done: None,
            failed: false,
        }
    }
}

/// What stays fixed during one call: the params and how to stop.
struct Rules<'a, D: ?Sized> {
    params: &'a SamplingParams,
    eos: Option<u32>,
    stops: StopStrings,
    detok: &'a D,
    context: usize,
}

/// A batched sampler: a KV cache of `max_batch` slots and every buffer generation needs, allocated
/// once and reused across calls (the model is passed per call, as training changes its weights).
pub struct Sampler<F: Float> {
    config: GptConfig,
    max_batch: usize,
    /// Slots the current call fills at most ([`wave_size`]).
    wave: usize,
    cache: KvCache<F>,
    scratch: InferScratch<F>,
    max_rows: usize,
    logits: Vec<F>,
    rows: Vec<(usize, u32)>,
    seqs: Vec<Seq>,
    /// Admitted this iteration: (prompt, first slot index in `admitted_slots`, end index).
    admissions: Vec<(usize, usize, usize)>,
    admitted_slots: Vec<usize>,
}

impl<F: Float> Sampler<F> {
    /// A sampler for models of shape `config`, running up to `max_batch` sequences at once
    /// (at least 1; fewer, in waves, when so many would not keep their keys and values in the
    /// CPU's cache). The KV cache is sized on first use to the longest prompt plus
    /// `max_new_tokens`.
    pub fn new(config: &GptConfig, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let max_rows = max_batch.max(PREFILL_ROWS);
        Sampler {
            config: config.clone(),
            max_batch,
            wave: max_batch,
            cache: KvCache::new(config, max_batch, 1),
            scratch: InferScratch::new(config, max_rows),
            max_rows,
            logits: vec![F::zero(); max_rows * config.vocab_size],
            rows: Vec::with_capacity(max_rows),
            seqs: (0..max_batch).map(|_| Seq::new(config.vocab_size)).collect(),
            admissions: Vec::with_capacity(max_batch),
            admitted_slots: Vec::with_capacity(max_batch),
        }
    }

    /// Sequences run at once, at most.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Samples `params.n` completions of each prompt, prompt `i` taking id `i`.
    /// Returns one group per prompt, in order, each with its `n` completions in sample order.
    pub fn generate<P: AsRef<[u32]>, D: Detokenize + ?Sized>(
        &mut self,
        model: &Gpt<F>,
        prompts: &[P],
        params: &SamplingParams,
        detok: &D,
    ) -> Result<Vec<Vec<Completion>>, SamplerError> {
        let prompts: Vec<Prompt> =
            prompts.iter().enumerate().map(|(i, p)| Prompt { id: i as u64, tokens: p.as_ref() }).collect();
        self.generate_prompts(model, &prompts, params, detok)
    }

    /// [`Sampler::generate`] with explicit prompt ids (for reproducibility across batches that
    /// group prompts differently, key the ids to the dataset).
    pub fn generate_prompts<D: Detokenize + ?Sized>(
        &mut self,
        model: &Gpt<F>,
        prompts: &[Prompt],
        params: &SamplingParams,
        detok: &D,
    ) -> Result<Vec<Vec<Completion>>, SamplerError> {
        // Run the loop on one of rayon's workers: a parallel call made from outside the pool
        // hands its work over and sleeps on a lock until it is done (10-20 µs a call on this
        // VM), one made from a worker costs about 2 µs, and a decode step makes about 20.
        rayon::scope(|_| self.generate_on_worker(model, prompts, params, detok))
    }

    fn generate_on_worker<D: Detokenize + ?Sized>(
        &mut self,
        model: &Gpt<F>,
        prompts: &[Prompt],
        params: &SamplingParams,
        detok: &D,
    ) -> Result<Vec<Vec<Completion>>, SamplerError> {
        params.validate()?;
        if model.config() != &self.config {
            return Err(SamplerError::ConfigMismatch);
        }
        let (context, vocab) = (self.config.context_length, self.config.vocab_size);
        for (index, p) in prompts.iter().enumerate() {
            if p.tokens.is_empty() {
                return Err(SamplerError::EmptyPrompt { index });
            }
            if p.tokens.len() >= context {
                return Err(SamplerError::PromptTooLong {
                    index,
                    length: p.tokens.len(),
                    context_length: context,
                });
            }
            if let Some(&id) = p.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::TokenOutOfRange { id, vocab_size: vocab }.into());
            }
        }
        let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        let need = (longest + params.max_new_tokens).min(context);
        if self.cache.capacity() < need {
            self.cache = KvCache::new(&self.config, self.max_batch, need);
        }
        self.cache.reset_all();
        let total = prompts.len() * params.n;
        self.wave = wave_size(&self.config, size_of::<F>(), self.max_batch, total, params.n, need);
        for seq in &mut self.seqs {
            seq.active = false;
        }
        let rules = Rules {
            params,
            eos: if params.stop_at_eos { detok.eos() } else { None },
            stops: StopStrings::new(&params.stop),
            detok,
            context,
        };

        let mut out: Vec<Vec<Option<Completion>>> = prompts.iter().map(|_| vec![None; params.n]).collect();
        let mut next = (0usize, 0usize); // the next (prompt, sample) to admit
        loop {
            self.admit(prompts, params, &mut next);
            self.prefill(model, prompts, &rules)?;
            self.decode(model, &rules)?;
            self.retire(&mut out, params)?;
            if next.0 == prompts.len() && self.seqs.iter().all(|s| !s.active) {
                break;
            }
        }
        Ok(out
            .into_iter()
            .map(|g| g.into_iter().map(|c| c.expect("every sample retired")).collect())
            .collect())
    }

    /// Gives free slots to the next (prompt, sample) pairs, in order.
    fn admit(&mut self, prompts: &[Prompt], params: &SamplingParams, next: &mut (usize, usize)) {
        self.admissions.clear();
        self.admitted_slots.clear();
        let mut cursor = 0; // free slots are taken in increasing order
        while next.0 < prompts.len() {
            let start = self.admitted_slots.len();
            while next.1 < params.n {
                while cursor < self.wave && self.seqs[cursor].active {
                    cursor += 1;
                }
                if cursor == self.wave {
                    break;
                }
                let slot = cursor;
                let p = &prompts[next.0];
                let seq = &mut self.seqs[slot];
                seq.active = true;
                seq.prompt = next.0;
                seq.prompt_id = p.id;
                seq.sample = next.1;
                seq.prompt_len = p.tokens.len();
                seq.stream = Stream::new(params.seed, p.id, next.1 as u64);
                seq.tokens.clear();
                seq.tokens.reserve(params.max_new_tokens);
                seq.logprobs.clear();
                seq.logprobs.reserve(params.max_new_tokens);
                seq.sampled.clear();
                seq.sampled.reserve(params.max_new_tokens);
                seq.text.clear();
                seq.seen.clear();
                if params.repetition_penalty != 1.0 {
                    p.tokens.iter().for_each(|&t| seq.seen.insert(t));
                }
                seq.done = None;
                seq.failed = false;
                self.admitted_slots.push(slot);
                next.1 += 1;
            }
            if self.admitted_slots.len() > start {
                self.admissions.push((next.0, start, self.admitted_slots.len()));
            }
            if next.1 < params.n {
                break; // out of slots
            }
            *next = (next.0 + 1, 0);
        }
    }

    /// Runs the admitted prompts through the model (each once, in its first slot), copies the
    /// cache to the group's other slots, and draws every admitted sequence's first token.
    fn prefill<D: Detokenize + ?Sized>(
        &mut self,
        model: &Gpt<F>,
        prompts: &[Prompt],
        rules: &Rules<D>,
    ) -> Result<(), SamplerError> {
        if self.admissions.is_empty() {
            return Ok(());
        }
        let vocab = self.config.vocab_size;
        // Rows of all admitted prompts, back to back; admission a's last row is ends[a] - 1.
        self.rows.clear();
        for &(p, s0, _) in &self.admissions {
            let head = self.admitted_slots[s0];
            self.rows.extend(prompts[p].tokens.iter().map(|&t| (head, t)));
        }
        let mut a = 0;
        let mut end = 0; // end row of admission a
        let mut chunk_start = 0;
        while chunk_start < self.rows.len() {
            let chunk_end = (chunk_start + self.max_rows).min(self.rows.len());
            let n = chunk_end - chunk_start;
            model.forward_cached(
                &mut self.cache,
                &mut self.scratch,
                &self.rows[chunk_start..chunk_end],
                &mut self.logits[..n * vocab],
            )?;
            // Every admission whose prompt ends in this chunk: share its cache, draw first tokens.
            while a < self.admissions.len() {
                let (p, s0, s1) = self.admissions[a];
                let last = end + prompts[p].tokens.len() - 1;
                if last >= chunk_end {
                    break;
                }
                let row = &self.logits[(last - chunk_start) * vocab..(last - chunk_start + 1) * vocab];
                let head = self.admitted_slots[s0];
                for &slot in &self.admitted_slots[s0..s1] {
                    self.cache.copy_slot(head, slot);
                    advance(&mut self.seqs[slot], row, rules);
                }
                end = last + 1;
                a += 1;
            }
            chunk_start = chunk_end;
        }
        Ok(())
    }

    /// One decode step: appends every running sequence's last token and draws its next.
    fn decode<D: Detokenize + ?Sized>(
        &mut self,
        model: &Gpt<F>,
        rules: &Rules<D>,
    ) -> Result<(), SamplerError> {
        self.rows.clear();
        for (slot, seq) in self.seqs.iter_mut().enumerate() {
            if seq.active && seq.done.is_none() {
                seq.row = self.rows.len();
                self.rows.push((slot, *seq.tokens.last().expect("a running sequence has a token")));
            }
        }
        let n = self.rows.len();
        if n == 0 {
            return Ok(());
        }
        let vocab = self.config.vocab_size;
        model.forward_cached(
            &mut self.cache,
            &mut self.scratch,
            &self.rows,
            &mut self.logits[..n * vocab],
        )?;
        let logits = &self.logits;
        let step = |seq: &mut Seq| {
            if seq.active && seq.done.is_none() {
                advance(seq, &logits[seq.row * vocab..(seq.row + 1) * vocab], rules);
            }
        };
        if n >= PAR_ROWS {
            self.seqs.par_iter_mut().for_each(step);
        } else {
            self.seqs.iter_mut().for_each(step);
        }
        Ok(())
    }

    /// Turns finished sequences into completions and frees their slots.
    fn retire(
        &mut self,
        out: &mut [Vec<Option<Completion>>],
        params: &SamplingParams,
    ) -> Result<(), SamplerError> {
        for (slot, seq) in self.seqs.iter_mut().enumerate() {
            if seq.active && seq.failed {
                return Err(SamplerError::NonFiniteLogits { prompt_id: seq.prompt_id, sample: seq.sample });
            }
            let Some((finish_reason, stop)) = seq.done.filter(|_| seq.active) else { continue };
            let stop = stop.map(|k| params.stop[k].clone());
            out[seq.prompt][seq.sample] = Some(Completion {
                prompt_id: seq.prompt_id,
                sample: seq.sample,
                tokens: seq.tokens.clone(),
                text: String::from_utf8_lossy(&seq.text).into_owned(),
                finish_reason,
                stop,
                logprobs: seq.logprobs.clone(),
                sampled_logprobs: seq.sampled.clone(),
            });
            seq.active = false;
            self.cache.reset(slot);
        }
        Ok(())
    }
}

/// Draws `seq`'s next token from its row of logits, records it, and checks the stops in order:
/// end-of-sequence token, stop string, length (max new tokens, or the context full).
fn advance<F: Float, D: Detokenize + ?Sized>(seq: &mut Seq, row: &[F], rules: &Rules<D>) {
    let params = rules.params;
    let u = seq.stream.uniform(seq.tokens.len() as u64);
    let Some(c) = choose(row, params, &seq.seen, u, &mut seq.scratch) else {
        seq.failed = true;
        seq.done = Some((FinishReason::Length, None));
        return;
    };
    seq.tokens.push(c.token);
    seq.logprobs.push(c.logprob);
    seq.sampled.push(c.sampled_logprob);
    if params.repetition_penalty != 1.0 {
        seq.seen.insert(c.token);
    }
    if Some(c.token) == rules.eos {
        seq.done = Some((FinishReason::Eos, None));
        return;
    }
    let old = seq.text.len();
    rules.detok.push_bytes(c.token, &mut seq.text);
    if let Some((k, start)) = rules.stops.find(&seq.text, old) {
        seq.text.truncate(start);
        seq.done = Some((FinishReason::Stop, Some(k)));
        return;
    }
    // Prompt plus completion must fit the context, so that the trainer can recompute it.
    if seq.tokens.len() >= params.max_new_tokens || seq.prompt_len + seq.tokens.len() >= rules.context {
        seq.done = Some((FinishReason::Length, None));
    }
}

#[cfg(test)]
mod wave_tests {
    use super::*;

    #[test]
    fn sequences_whose_cache_would_not_fit_run_in_equal_waves_of_whole_groups() {
        let s = GptConfig::new(64, 64, 2, 4, 128); // config S: 80 KB a sequence at 40 positions
        // A GRPO step's 16 x 8 sequences: 10 MB, so two waves of 64; half of them fit at once.
        assert_eq!(wave_size(&s, 4, 128, 128, 8, 40), 64);
        assert_eq!(wave_size(&s, 4, 128, 64, 8, 40), 128);
        // Fewer slots than a wave: the caller's bound holds.
        assert_eq!(wave_size(&s, 4, 48, 128, 8, 40), 48);
        // Waves are whole groups, and never fewer than MIN_WAVE sequences.
        for (total, n) in [(130, 10), (300, 6), (129, 1), (1000, 8)] {
            let w = wave_size(&s, 4, 512, total, n, 40);
            assert!(w.is_multiple_of(n) && (MIN_WAVE..=102 + n).contains(&w), "{total} x {n}: {w}");
        }
        // Too few sequences fit to keep MIN_WAVE of them: no waves (config M at 128 positions).
        let m = GptConfig::new(512, 128, 4, 4, 256);
        assert_eq!(wave_size(&m, 4, 128, 128, 8, 128), 128);
        // f64 doubles the bytes: S's 40 positions then fit 51 sequences, fewer than MIN_WAVE.
        assert_eq!(wave_size(&s, 8, 128, 128, 8, 40), 128);
    }
}
