//! The policy-gradient estimators are unbiased (or biased exactly as theory says), checked against
//! the exact gradient of the expected reward of a policy small enough to enumerate.
//!
//! The policy is a real `Gpt<f64>` (vocabulary 3, context 4, 1 layer, width 8, 2 heads) that
//! continues a fixed 1-token prompt with exactly 3 tokens (no EOS), so there are 27 completions.
//! With a fixed, non-constant reward table `R(y)`:
//!
//! - exact: `J = Σ_y π(y) R(y)` from one batched forward of all 27 sequences, `∇J` by backward;
//! - Monte Carlo: `K` independent groups of `G` completions from the real sampler (seeds `0..K`),
//!   advantages by `pglm_trainer::rl::advantage`, then the tape gradient of `policy_loss` (PPO-clip,
//!   on-policy: old = current log-probs) with seq-mean-token-sum weights `1/G`. Each estimate is
//!   `ĝ = −(1/G) Σ_i A_i ∇log π(y_i)`, whose expectation is `−∇J` for REINFORCE with a fixed
//!   baseline and for RLOO, and `−(G−1)/G ∇J` for GRPO without std scaling (its baseline, the group
//!   mean, contains the sample itself with weight 1/G).
//!
//! The statistical bound: for every parameter component `c`, `|mean_K(ĝ_c) − E[ĝ_c]| ≤ 5·SE_c + 1e-12`
//! with `SE_c = sd_c / √K` (sample standard deviation); and along the direction `u = ∇J/‖∇J‖`,
//! where the `(G−1)/G` factor matters most, `|z| = |mean(u·ĝ) − u·E[ĝ]| / SE_u ≤ 5`. Under the
//! central limit theorem a 5σ bound fails by chance with probability ≈ 6e-7 per component (about
//! 1e-3 over all ~950 components of each estimator); the seeds are fixed, so the test is
//! deterministic. Power: with `G = 2`, unscaled GRPO's mean is about ½∇J, and its distance from `−∇J`
//! along `u` must be more than 10 standard errors.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::{Tape, Var};
use pglm_model::{Gpt, GptConfig};
use pglm_sampler::{NoText, Sampler, SamplingParams};
use pglm_trainer::rl::advantage::{StdScale, broadcast, grpo, rloo};
use pglm_trainer::rl::loss::{
    Aggregation, PolicyLossConfig, PolicyLossKind, RatioLevel, policy_loss, token_weights,
};

const PROMPT: u32 = 1;
const LEN: usize = 3;
const VOCAB: usize = 3;

/// The tiny policy. GPT-2's N(0, 0.02) initialisation is almost uniform; scaling the weights by 15
/// gives a policy whose 27 sequence probabilities are clearly different (0.0027 to 0.17).
fn policy() -> Gpt<f64> {
    let mut model = Gpt::<f64>::new(GptConfig::new(VOCAB, 4, 1, 2, 8), 11).expect("valid config");
    for (_, p) in model.params.iter_mut() {
        if !p.name.contains("ln") {
            p.value_mut().mapv_inplace(|v| v * 15.0);
        }
    }
    model
}

/// A fixed reward table over the 27 completions (values in {0, 0.25, ..., 1}).
fn reward(y: &[u32]) -> f64 {
    let (a, b, c) = (y[0] as u64, y[1] as u64, y[2] as u64);
    ((7 * a + 3 * b + 5 * c + a * c) % 5) as f64 / 4.0
}

fn all_sequences() -> Vec<Vec<u32>> {
    (0..VOCAB.pow(LEN as u32))
        .map(|k| (0..LEN).map(|t| ((k / VOCAB.pow(t as u32)) % VOCAB) as u32).collect())
        .collect()
}

/// `log π(y_t | prompt, y_<t)` of every token of `seqs`, shape (n, 3), with the parameters bound
/// as vars on the tape.
fn log_probs(model: &Gpt<f64>, tape: &mut Tape<f64>, seqs: &[Vec<u32>]) -> (Vec<Var>, Var) {
    let n = seqs.len();
    let ids: Vec<u32> = seqs.iter().flat_map(|y| [PROMPT, y[0], y[1]]).collect();
    let targets: Vec<u32> = seqs.iter().flat_map(|y| y.iter().copied()).collect();
    let ids = ArrayD::from_shape_vec(IxDyn(&[n, LEN]), ids).unwrap();
    let targets = ArrayD::from_shape_vec(IxDyn(&[n, LEN]), targets).unwrap();
    let params = model.bind(tape);
    let hidden = model.forward_with(tape, &params, &ids, None).expect("valid ids");
    let logits = model.logits(tape, hidden);
    (params, tape.token_log_probs(logits, &targets))
}

/// All parameter gradients as one flat vector (zeros for parameters the loss does not reach).
fn flat_grad(tape: &Tape<f64>, loss: Var, params: &[Var]) -> Vec<f64> {
    let grads = tape.backward(loss);
    params
        .iter()
        .flat_map(|&p| match grads.wrt(p) {
            Some(g) => g.iter().copied().collect::<Vec<_>>(),
            None => vec![0.0; tape.value(p).len()],
        })
        .collect()
}

/// `∇J` for `J = Σ_y π(y) R(y)`, by enumeration; also checks `Σ_y π(y) = 1`.
fn exact_gradient(model: &Gpt<f64>) -> Vec<f64> {
    let seqs = all_sequences();
    let mut tape = Tape::new();
    let (params, lp) = log_probs(model, &mut tape, &seqs);
    let seq_lp = tape.sum(lp, &[1], false);
    let p = tape.exp(seq_lp);
    let total: f64 = tape.value(p).sum();
    assert!((total - 1.0).abs() < 1e-12, "the 27 sequences' probabilities sum to {total}");
    let (lo, hi) = tape.value(p).iter().fold((1.0f64, 0.0f64), |(lo, hi), &q| (lo.min(q), hi.max(q)));
    println!("π(y) over the 27 sequences: min {lo:.5}, max {hi:.4}");
    let rewards =
        ArrayD::from_shape_vec(IxDyn(&[seqs.len()]), seqs.iter().map(|y| reward(y)).collect()).unwrap();
    let r = tape.constant(rewards);
    let pr = tape.mul(p, r);
    let j = tape.sum_all(pr);
    flat_grad(&tape, j, &params)
}

/// The estimators compared: how each turns a group's rewards into advantages.
#[derive(Clone, Copy, Debug)]
enum Estimator {
    /// REINFORCE with a fixed baseline `b` (not a function of the samples).
    Reinforce(f64),
    Rloo,
    /// GRPO with `StdScale::None` (Dr. GRPO).
    GrpoNoStd,
}

impl Estimator {
    fn advantages(self, rewards: &[f64]) -> Vec<f64> {
        match self {
            Estimator::Reinforce(b) => rewards.iter().map(|r| r - b).collect(),
            Estimator::Rloo => rloo(rewards, rewards.len()),
            Estimator::GrpoNoStd => grpo(rewards, rewards.len(), StdScale::None, 0.0),
        }
    }
}

/// `K` Monte Carlo gradient estimates per estimator, each from its own group of `G` samples.
fn estimates(model: &Gpt<f64>, estimators: &[Estimator], g: usize, k: usize) -> Vec<Vec<Vec<f64>>> {
    let mut sampler = Sampler::new(model.config(), g);
    let cfg = PolicyLossConfig {
        kind: PolicyLossKind::Clip,
        clip_low: 0.2,
        clip_high: 0.2,
        dual_clip: Some(3.0),
        ratio_level: RatioLevel::Token,
    };
    let mut out = vec![Vec::with_capacity(k); estimators.len()];
    for seed in 0..k as u64 {
        let params = SamplingParams {
            n: g,
            temperature: 1.0,
            max_new_tokens: LEN,
            stop_at_eos: false,
            seed,
            ..Default::default()
        };
        let group = sampler.generate(model, &[[PROMPT]], &params, &NoText { eos: None }).unwrap().remove(0);
        let seqs: Vec<Vec<u32>> = group.iter().map(|c| c.tokens.clone()).collect();
        assert!(seqs.iter().all(|y| y.len() == LEN));
        let rewards: Vec<f64> = seqs.iter().map(|y| reward(y)).collect();

        let mut tape = Tape::new();
        let (vars, lp) = log_probs(model, &mut tape, &seqs);
        // On-policy: the rollout's log-probs are the current ones, so every ratio is exactly 1.
        let old = tape.value(lp).clone().into_dimensionality().unwrap();
        let mask = ndarray::Array2::ones((g, LEN));
        let w = token_weights(Aggregation::SeqMeanTokenSum, &mask, 0.0);
        for (e, est) in estimators.iter().enumerate() {
            let adv = broadcast(&est.advantages(&rewards), &mask);
            let terms = policy_loss(&mut tape, lp, &old, &adv, &mask, &w, &cfg);
            assert_eq!((terms.stats.ratio_min, terms.stats.ratio_max), (1.0, 1.0));
            out[e].push(flat_grad(&tape, terms.loss, &vars));
        }
    }
    out
}

/// Mean and standard error of the mean of each component of `samples`.
fn mean_and_se(samples: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let k = samples.len() as f64;
    let p = samples[0].len();
    let mean: Vec<f64> = (0..p).map(|c| samples.iter().map(|s| s[c]).sum::<f64>() / k).collect();
    let se = (0..p)
        .map(|c| {
            let var = samples.iter().map(|s| (s[c] - mean[c]).powi(2)).sum::<f64>() / (k - 1.0);
            (var / k).sqrt()
        })
        .collect();
    (mean, se)
}

/// `z = (mean(u·ĝ) − u·target) / SE(u·ĝ)` along the unit vector `u`.
fn z_along(samples: &[Vec<f64>], u: &[f64], target: &[f64]) -> f64 {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let proj: Vec<Vec<f64>> = samples.iter().map(|s| vec![dot(s, u)]).collect();
    let (m, se) = mean_and_se(&proj);
    (m[0] - dot(u, target)) / se[0]
}

/// Every component within 5 standard errors, and |z| ≤ 5 along `u`.
fn assert_agrees(name: &str, samples: &[Vec<f64>], target: &[f64], u: &[f64]) {
    let (mean, se) = mean_and_se(samples);
    let mut worst = (0.0f64, 0usize);
    for c in 0..target.len() {
        let dev = (mean[c] - target[c]).abs();
        assert!(
            dev <= 5.0 * se[c] + 1e-12,
            "{name}: component {c}: mean {} vs expected {} (SE {})",
            mean[c],
            target[c],
            se[c]
        );
        // (Components whose gradient is zero up to rounding have SE ~ 1e-16: not informative.)
        if se[c] > 1e-9 && dev / se[c] > worst.0 {
            worst = (dev / se[c], c);
        }
    }
    let z = z_along(samples, u, target);
    println!("{name}: worst component {:.2} SE (#{}), z along ∇J = {z:.2}", worst.0, worst.1);
    assert!(z.abs() <= 5.0, "{name}: z = {z} along ∇J");
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm > 1e-6, "the exact gradient is (nearly) zero: the test would be vacuous");
    v.iter().map(|x| x / norm).collect()
}

#[test]
fn mean_estimates_match_the_exact_gradient() {
    let model = policy();
    let grad_j = exact_gradient(&model);
    let u = unit(&grad_j);
    let (g, k) = (4, 3000);
    let estimators = [Estimator::Reinforce(0.4), Estimator::Rloo, Estimator::GrpoNoStd];
    let all = estimates(&model, &estimators, g, k);
    // The loss is −J's estimate: REINFORCE and RLOO are unbiased for −∇J.
    let minus: Vec<f64> = grad_j.iter().map(|x| -x).collect();
    assert_agrees("REINFORCE, b = 0.4", &all[0], &minus, &u);
    assert_agrees("RLOO", &all[1], &minus, &u);
    // GRPO without std scaling: E = −(G−1)/G ∇J.
    let scaled: Vec<f64> = grad_j.iter().map(|x| -x * (g as f64 - 1.0) / g as f64).collect();
    assert_agrees("GRPO (no std), (G−1)/G ∇J", &all[2], &scaled, &u);
}

#[test]
fn the_test_has_power_unscaled_grpo_with_two_samples_is_half_the_gradient() {
    let model = policy();
    let grad_j = exact_gradient(&model);
    let u = unit(&grad_j);
    let (g, k) = (2, 2000);
    let all = estimates(&model, &[Estimator::GrpoNoStd], g, k);
    let half: Vec<f64> = grad_j.iter().map(|x| -0.5 * x).collect();
    assert_agrees("GRPO (no std), G = 2, ½∇J", &all[0], &half, &u);
    // Against the unbiased target the same samples fail clearly.
    let minus: Vec<f64> = grad_j.iter().map(|x| -x).collect();
    let z = z_along(&all[0], &u, &minus);
    println!("GRPO (no std), G = 2, against ∇J: z = {z:.1}");
    assert!(z.abs() > 10.0, "z = {z}: the test cannot tell (G−1)/G ∇J from ∇J");
}

/// The sampler reports the training policy's log-probabilities for the sampled tokens: they agree
/// with the tape's `token_log_probs`, but only to f32 rounding (the sampler's processors work on
/// f32 copies of the logits even for an `f64` model; measured max difference ~1e-7). So the ratio
/// is exactly 1 on-policy only when `old_logp` is the trainer's own recomputation (as in
/// `estimates`, where `ratio_min == ratio_max == 1` is asserted), not the sampler's numbers.
#[test]
fn sampler_log_probs_match_the_tapes_to_f32_rounding() {
    let model = policy();
    let mut sampler = Sampler::new(model.config(), 8);
    let mut worst = 0.0f64;
    for seed in 0..20 {
        let params = SamplingParams {
            n: 8,
            temperature: 1.0,
            max_new_tokens: LEN,
            stop_at_eos: false,
            seed,
            ..Default::default()
        };
        let group = sampler.generate(&model, &[[PROMPT]], &params, &NoText { eos: None }).unwrap().remove(0);
        let seqs: Vec<Vec<u32>> = group.iter().map(|c| c.tokens.clone()).collect();
        let mut tape = Tape::no_grad();
        let (_, lp) = log_probs(&model, &mut tape, &seqs);
        let lp = tape.value(lp);
        for (i, c) in group.iter().enumerate() {
            assert_eq!(c.logprobs.len(), LEN);
            for (t, &s) in c.logprobs.iter().enumerate() {
                worst = worst.max((lp[[i, t]] - f64::from(s)).abs());
            }
        }
    }
    println!("max |tape − sampler| log-prob: {worst:e}");
    assert!(worst < 1e-5, "max |tape − sampler| = {worst}");
}
