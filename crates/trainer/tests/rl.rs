//! The RL trainer end to end on a tiny SFT model: every algorithm runs and logs what it should,
//! off-policy passes and KL placements work, and a resumed run equals an uninterrupted one bit
//! for bit.

mod common;

use std::path::{Path, PathBuf};

use common::{addition_data, tiny_sft_config};
use pglm_trainer::Trainer;
use pglm_trainer::rl::{AlgorithmConfig, KlPlacement, RlConfig, RlStepMetrics, RlTrainer};

/// A briefly SFT-trained policy in `dir/sft`, and the addition data in `dir`.
fn sft_policy(dir: &Path) -> PathBuf {
    addition_data(dir, 64, 8);
    let mut c = tiny_sft_config(dir);
    c.run.steps = 6;
    let run = dir.join("sft");
    Trainer::<f32>::new(c, &run).unwrap().run().unwrap();
    run
}

fn rl_config(dir: &Path, init: &Path, preset: &str) -> RlConfig {
    let mut c = RlConfig::new(init, "addition", dir.join("train.jsonl"));
    c.task.settings = serde_json::json!({"digits": 2});
    c.task.test = Some(dir.join("test.jsonl"));
    c.task.eval_examples = 8;
    c.algorithm = AlgorithmConfig::preset(preset).unwrap();
    c.rollout.prompts_per_step = 4;
    c.rollout.group_size = 4;
    c.rollout.max_new_tokens = 4;
    c.optim.lr = 1e-3;
    c.optim.warmup_steps = 0;
    c.run.steps = 3;
    c.run.eval_every = 2;
    c.run.checkpoint_every = 2;
    c.log.completions_every = 1;
    c
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn reproducible(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    for f in pglm_trainer::rl::metrics::RL_WALL_CLOCK_FIELDS.iter().chain(&["elapsed_s"]) {
        v.as_object_mut().unwrap().remove(*f);
    }
    v
}

#[test]
fn every_preset_trains_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let init = sft_policy(dir.path());
    for preset in pglm_trainer::rl::config::PRESETS {
        let mut c = rl_config(dir.path(), &init, preset);
        if *preset == "dapo" {
            c.filter.dynamic_sampling = true;
            c.filter.overlong_buffer = Some(2);
        }
        if *preset == "ppo" {
            c.update.epochs = 2;
            c.update.mini_batches = 2;
            c.update.micro_batch_size = Some(3);
        }
        let run = dir.path().join(format!("rl-{preset}"));
        let mut t = RlTrainer::<f32>::new(c, &run).unwrap();
        let summary = t.run().unwrap();
        assert_eq!(summary.steps, 3, "{preset}");
        let m = lines(&run.join("metrics.jsonl"));
        // Step 0 (the evaluation of the starting policy), then one line per step.
        assert_eq!(m.len(), 4, "{preset}");
        assert!(m[0]["eval_accuracy"].is_number(), "{preset}");
        let last: RlStepMetrics = serde_json::from_value(m[3].clone()).unwrap();
        assert!(last.eval_accuracy.is_some(), "{preset}");
        assert!(last.entropy.unwrap() > 0.0, "{preset}");
        assert!(last.completion_len_mean > 0.0, "{preset}");
        if *preset == "ppo" {
            assert_eq!(last.updates, 4, "2 epochs × 2 mini-batches");
            assert!(last.value_loss.is_some());
            // The sampler's log-probabilities are the training forward's, up to f32 rounding.
            assert!(last.logp_diff_max.unwrap() < 1e-4, "{:?}", last.logp_diff_max);
        } else if last.sequences > 0 {
            assert_eq!(last.updates, 1, "{preset}");
        }
        assert!(!lines(&run.join("completions.jsonl")).is_empty(), "{preset}");
        assert!(run.join("latest").exists(), "{preset}");
    }
}

#[test]
fn on_policy_single_pass_has_ratio_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let init = sft_policy(dir.path());
    let c = rl_config(dir.path(), &init, "grpo");
    let mut t = RlTrainer::<f32>::new(c, dir.path().join("rl")).unwrap();
    let m = t.step().unwrap();
    assert_eq!(m.ratio_min, Some(1.0));
    assert_eq!(m.ratio_max, Some(1.0));
    assert_eq!(m.clip_frac_low + m.clip_frac_high, 0.0);
}

#[test]
fn kl_in_the_loss_and_in_the_reward_with_an_adaptive_coefficient() {
    let dir = tempfile::tempdir().unwrap();
    let init = sft_policy(dir.path());
    for placement in [KlPlacement::Loss, KlPlacement::Reward] {
        let mut c = rl_config(dir.path(), &init, "grpo");
        c.kl.coef = 0.05;
        c.kl.placement = placement;
        c.kl.target = Some(0.01);
        c.kl.horizon = 100.0;
        c.optim.lr = 1e-2;
        // The barely trained policy may score 0 everywhere (no advantage signal): the entropy
        // bonus makes sure it moves away from the reference.
        c.algorithm.entropy_coef = 0.1;
        let run = dir.path().join(format!("rl-kl-{placement:?}"));
        let mut t = RlTrainer::<f32>::new(c, &run).unwrap();
        let first = t.step().unwrap();
        // The first step's policy is the reference itself: KL 0 up to rounding.
        // (Measured on the sampler's log-probabilities, which agree with the training forward to ~1e-7.)
        assert!(first.kl.unwrap() < 1e-9, "{placement:?}: {:?}", first.kl);
        t.step().unwrap();
        let m = t.step().unwrap();
        assert!(m.kl.unwrap() > 0.0, "{placement:?}: the policy moved away from the reference");
        assert_ne!(m.kl_coef, 0.05, "{placement:?}: the adaptive coefficient moved");
        assert!(run.join("reference.ckpt").exists());
    }
}

#[test]
fn resumed_rl_run_equals_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let init = sft_policy(dir.path());
    let mut c = rl_config(dir.path(), &init, "reinforce");
    c.kl.coef = 0.02; // the reference must be reloaded too
    c.run.steps = 5;
    let full = dir.path().join("full");
    RlTrainer::<f32>::new(c.clone(), &full).unwrap().run().unwrap();

    // Interrupted after step 3 (checkpoint at 2): the third step's line must be redone.
    let cut = dir.path().join("cut");
    let mut t = RlTrainer::<f32>::new(c, &cut).unwrap();
    for _ in 0..3 {
        t.step().unwrap();
    }
    drop(t);
    let mut resumed = RlTrainer::<f32>::resume(&cut).unwrap();
    assert_eq!(resumed.steps_done(), 2);
    resumed.run().unwrap();

    let a: Vec<_> = lines(&full.join("metrics.jsonl")).iter().map(reproducible).collect();
    let b: Vec<_> = lines(&cut.join("metrics.jsonl")).iter().map(reproducible).collect();
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    assert_eq!(lines(&full.join("completions.jsonl")), lines(&cut.join("completions.jsonl")));
}

/// Every parameter's values, by name.
fn weights(t: &RlTrainer<f32>) -> Vec<(String, Vec<f32>)> {
    t.policy().params.iter().map(|(_, p)| (p.name.clone(), p.value().iter().copied().collect())).collect()
}

#[test]
fn critic_warmup_moves_only_the_value_head_then_the_policy_too() {
    let dir = tempfile::tempdir().unwrap();
    let init = sft_policy(dir.path());
    let mut c = rl_config(dir.path(), &init, "ppo");
    c.algorithm.critic_warmup = 2;
    let mut t = RlTrainer::<f32>::new(c, dir.path().join("rl")).unwrap();
    let changed = |a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]| -> Vec<String> {
        a.iter().zip(b).filter(|(x, y)| x.1 != y.1).map(|(x, _)| x.0.clone()).collect()
    };
    let w0 = weights(&t);
    let m = t.step().unwrap();
    assert!(m.value_loss.is_some() && m.entropy.is_none() && m.policy_loss == Some(0.0), "{m:?}");
    t.step().unwrap();
    let w2 = weights(&t);
    let moved = changed(&w0, &w2);
    assert!(!moved.is_empty(), "the value head learns during warmup");
    assert!(moved.iter().all(|n| n.starts_with("value_head.")), "only the value head moved: {moved:?}");
    t.step().unwrap();
    let moved = changed(&w2, &weights(&t));
    assert!(moved.iter().any(|n| n.starts_with("h.")), "after warmup the policy trains: {moved:?}");
}

#[test]
fn bad_configs_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = rl_config(dir.path(), dir.path(), "reinforce");
    c.update.epochs = 2;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("algorithm.loss"), "{err}");
    let mut c = rl_config(dir.path(), dir.path(), "grpo");
    c.algorithm.critic_warmup = 5;
    assert!(c.validate().unwrap_err().to_string().contains("algorithm.critic_warmup"));
    let mut c = rl_config(dir.path(), dir.path(), "grpo");
    c.rollout.group_size = 1;
    assert!(c.validate().unwrap_err().to_string().contains("rollout.group_size"));
    let c = rl_config(dir.path(), &dir.path().join("missing"), "grpo");
    addition_data(dir.path(), 8, 2);
    let err = RlTrainer::<f32>::new(c, dir.path().join("rl")).err().unwrap().to_string();
    assert!(err.contains("missing"), "{err}");
}
