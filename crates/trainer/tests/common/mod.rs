//! Shared fixtures: a small addition dataset and a tiny model config.

#![allow(dead_code)]

use std::path::Path;

use pglm_model::GptConfig;
use pglm_rewards::dataset::{DataSpec, render_dataset, write_files};
use pglm_trainer::{StepMetrics, TaskEvalConfig, TrainConfig};

/// Writes `train.jsonl`, `test.jsonl`, `sft.jsonl` of the addition task (2-digit operands) into `dir`.
pub fn addition_data(dir: &Path, n_train: usize, n_test: usize) {
    let task = pglm_rewards::builtin_task("addition", &serde_json::json!({"digits": 2})).unwrap();
    let spec = DataSpec { seed: 11, n_train, n_test, format_sft: false };
    write_files(dir, &render_dataset(&*task, &spec).unwrap()).unwrap();
}

/// A one-layer model SFT config on `dir/sft.jsonl`, with a holdout and task accuracy on 8 prompts.
pub fn tiny_sft_config(dir: &Path) -> TrainConfig {
    let mut c = TrainConfig::sft(dir.join("sft.jsonl"), GptConfig::new(0, 16, 1, 2, 16), 12);
    c.data.holdout = 8;
    c.data.task = Some(TaskEvalConfig {
        name: "addition".into(),
        settings: serde_json::json!({"digits": 2}),
        test: dir.join("test.jsonl"),
        examples: 8,
        max_new_tokens: 4,
    });
    c.batch.batch_size = 8;
    c.batch.micro_batch_size = Some(4);
    c.optim.warmup_steps = 2;
    c.optim.lr = 3e-3;
    c.run.steps = 10;
    c.run.eval_every = 3;
    c.run.eval_batches = 1;
    c.run.checkpoint_every = 4;
    c
}

/// A metrics line as JSON without its wall-clock fields.
pub fn reproducible(m: &StepMetrics) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap();
    for f in pglm_trainer::metrics::WALL_CLOCK_FIELDS {
        v.as_object_mut().unwrap().remove(*f);
    }
    v
}
