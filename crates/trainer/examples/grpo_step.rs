//! One GRPO step on config S, timed phase by phase, as `shared/peer/grpo_step.py` times it in
//! PyTorch: 16 prompts of 8 random tokens × 8 completions × 32 new tokens (temperature 1, no EOS),
//! reward = fraction of completion tokens below vocab/2, group-normalised advantages, clipped
//! ratio (ε = 0.2) with π_old = the current policy (one update), k3 KL to a frozen copy (β = 0.04)
//! in the loss, token mean over all completion tokens, AdamW (lr 1e-4, no decay).
//!
//! ```text
//! cargo run --release -p pglm-trainer --example grpo_step -- [steps] [warmup]
//! ```
//!
//! Built from the library's pieces (sampler, scorer, `rl::rollout::batch`, `rl::advantage::grpo`,
//! `rl::update`), which is also how to assemble a custom RL loop.

use std::time::Instant;

use pglm_autograd::optim::{AdamW, Optimizer, clip_grad_norm};
use pglm_model::{Gpt, GptConfig};
use pglm_sampler::{NoText, Prompt, Sampler, SamplingParams, Scorer};
use pglm_trainer::rl::advantage::{StdScale, broadcast, grpo};
use pglm_trainer::rl::loss::{Aggregation, token_weights};
use pglm_trainer::rl::rollout::{Sample, TaskPrompt, batch};
use pglm_trainer::rl::update::{LossInputs, accumulate, score_reference};
use pglm_trainer::rl::{KlPlacement, RlConfig};

const PROMPTS: usize = 16;
const GROUP: usize = 8;
const PROMPT_LEN: usize = 8;
const NEW: usize = 32;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let (steps, warmup) = (args.first().copied().unwrap_or(10), args.get(1).copied().unwrap_or(2));
    let cfg = GptConfig::new(64, 64, 2, 4, 128);
    let mut policy = Gpt::<f32>::new(cfg.clone(), 0)?;
    let mut reference = Gpt::<f32>::new(cfg.clone(), 0)?;
    for ((_, r), (_, p)) in reference.params.iter_mut().zip(policy.params.iter()) {
        *r.value_mut() = p.value().clone();
    }
    let mut rl = RlConfig::new("unused", "unused", "unused");
    rl.rollout.max_new_tokens = NEW;
    rl.algorithm.aggregation = Aggregation::TokenMean;
    rl.kl.coef = 0.04;
    rl.kl.placement = KlPlacement::Loss;
    let mut opt = AdamW::new(1e-4).with_betas(0.9, 0.95).with_weight_decay(0.0);
    let mut sampler = Sampler::<f32>::new(&cfg, PROMPTS * GROUP);
    // The reference's log-probs on the KV-cache path, each prompt prefilled once per group.
    let mut scorer = Scorer::<f32>::new(&cfg, PROMPTS * GROUP);
    let mut rows: Vec<[f64; 7]> = Vec::new();
    for step in 0..steps + warmup {
        let t0 = Instant::now();
        // Random prompts (a SplitMix-style hash of the step and position).
        let prompts: Vec<TaskPrompt> = (0..PROMPTS)
            .map(|p| TaskPrompt {
                text: String::new(),
                ids: (0..PROMPT_LEN)
                    .map(|i| {
                        let x = ((step * 1000 + p * 10 + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        ((x >> 33) % 64) as u32
                    })
                    .collect(),
                reference: serde_json::Value::Null,
            })
            .collect();
        let params = SamplingParams {
            n: GROUP,
            max_new_tokens: NEW,
            temperature: 1.0,
            stop_at_eos: false,
            seed: step as u64,
            ..SamplingParams::default()
        };
        let list: Vec<Prompt> =
            prompts.iter().enumerate().map(|(i, p)| Prompt { id: i as u64, tokens: &p.ids }).collect();
        let groups = sampler.generate_prompts(&policy, &list, &params, &NoText::default())?;
        let t1 = Instant::now();

        let samples: Vec<Sample> = groups
            .into_iter()
            .enumerate()
            .flat_map(|(p, g)| g.into_iter().map(move |c| (p, c)))
            .map(|(prompt, completion)| {
                let low = completion.tokens.iter().filter(|&&t| t < 32).count();
                let reward = Some(low as f64 / completion.tokens.len() as f64);
                Sample { prompt, completion, reward, components: vec![reward] }
            })
            .collect();
        let rewards: Vec<f64> = samples.iter().map(|s| s.reward.unwrap_or(0.0)).collect();
        let b = batch::<f32>(&samples, &prompts, 0, false);
        let adv = broadcast(&grpo(&rewards, GROUP, StdScale::Group, 1e-4), &b.mask);
        let n = samples.len();
        let width = b.mask.ncols();
        let ref_logp = score_reference(&mut scorer, &reference, &samples, &prompts, 1.0, width)?;
        let t2 = Instant::now();

        let inputs = LossInputs {
            adv: adv.mapv(|a| a as f32),
            old_logp: None,
            ref_logp: Some(ref_logp),
            values: None,
            critic_only: false,
        };
        let all: Vec<usize> = (0..n).collect();
        let weights = token_weights(Aggregation::TokenMean, &b.mask, NEW as f64);
        policy.params.zero_grad();
        let pass = accumulate(&mut policy, &rl, &b, &inputs, &all, &weights, 0.04, n)?;
        clip_grad_norm(&mut policy.params, f64::INFINITY);
        opt.step(&mut policy.params, 1e-4);
        let t3 = Instant::now();
        if step >= warmup {
            let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
            let opt_s = s(t2, t3) - pass.forward_s - pass.backward_s;
            rows.push([s(t0, t3), s(t0, t1), s(t1, t2), s(t2, t3), pass.forward_s, pass.backward_s, opt_s]);
        }
    }
    let col = |k: usize| median(rows.iter().map(|r| r[k]).collect());
    let gen_tokens = (PROMPTS * GROUP * NEW) as f64;
    println!(
        "GRPO step (S): total {:.1} ms | gen {:.1} ms ({:.0} tok/s) | ref+reward {:.1} ms | update {:.1} ms \
         (fwd+loss {:.1}, bwd {:.1}, clip+opt {:.1})",
        col(0) * 1e3,
        col(1) * 1e3,
        gen_tokens / col(1),
        col(2) * 1e3,
        col(3) * 1e3,
        col(4) * 1e3,
        col(5) * 1e3,
        col(6) * 1e3
    );
    Ok(())
}
