//! End to end, as a user runs pglm: generate the addition task, fine-tune a small model on it
//! briefly (SFT), then improve it with GRPO; RL must raise the held-out accuracy clearly above
//! its SFT starting point. (`docs/RESULTS.md` has the full-size version of this experiment.)

use std::path::Path;

use pglm::model::GptConfig;
use pglm::rewards::dataset::{DataSpec, render_dataset, write_files};
use pglm::trainer::rl::{AlgorithmConfig, RlConfig, RlTrainer};
use pglm::trainer::{TaskEvalConfig, TrainConfig, Trainer};

/// The addition task with 1- and 2-digit operands: 20,000 training pairs, 500 test prompts.
fn data(dir: &Path) -> serde_json::Value {
    let settings = serde_json::json!({"digits": 2});
    let task = pglm::rewards::builtin_task("addition", &settings).unwrap();
    let spec = DataSpec { seed: 1, n_train: 20_000, n_test: 500, format_sft: false };
    write_files(dir, &render_dataset(&*task, &spec).unwrap()).unwrap();
    settings
}

/// A short SFT run (250 steps of 64): the model has learnt the format and some of the sums.
fn sft(dir: &Path, settings: &serde_json::Value) -> std::path::PathBuf {
    let mut c = TrainConfig::sft(dir.join("sft.jsonl"), GptConfig::new(0, 16, 2, 4, 128), 16);
    c.data.holdout = 512;
    c.data.task = Some(TaskEvalConfig {
        name: "addition".into(),
        settings: settings.clone(),
        test: dir.join("test.jsonl"),
        examples: 500,
        max_new_tokens: 16,
    });
    c.batch.batch_size = 64;
    c.optim.lr = 3e-3;
    c.optim.min_lr = 3e-4;
    c.run.steps = 250;
    c.run.eval_every = 250;
    c.run.eval_batches = 8;
    c.run.checkpoint_every = 250;
    let run = dir.join("sft");
    Trainer::<f32>::new(c, &run).unwrap().run().unwrap();
    run
}

#[test]
fn grpo_raises_held_out_addition_accuracy_over_its_sft_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = data(dir.path());
    let init = sft(dir.path(), &settings);

    let mut c = RlConfig::new(&init, "addition", dir.path().join("train.jsonl"));
    c.task.settings = settings;
    c.task.test = Some(dir.path().join("test.jsonl"));
    c.task.eval_examples = 500;
    c.algorithm = AlgorithmConfig::preset("grpo").unwrap();
    c.rollout.max_new_tokens = 5;
    c.run.steps = 300;
    c.run.eval_every = 300;
    let mut rl = RlTrainer::<f32>::new(c, dir.path().join("rl")).unwrap();
    let before = rl.evaluate().unwrap().unwrap().accuracy;
    rl.run().unwrap();
    let after = rl.evaluate().unwrap().unwrap().accuracy;
    eprintln!("held-out accuracy: SFT {before:.3}, after GRPO {after:.3}");
    // Measured: 0.396 -> 0.434 (+3.8 points on 500 prompts; the run is deterministic; docs/RESULTS.md).
    assert!(after >= before + 0.03, "RL did not raise accuracy: {before:.3} -> {after:.3}");
}
