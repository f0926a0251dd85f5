//! Checkpoints and resume: an interrupted and resumed run equals an uninterrupted one bit for bit,
//! and a process killed while writing checkpoints leaves a loadable one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{addition_data, reproducible, tiny_sft_config};
use pglm_trainer::metrics::read_metrics;
use pglm_trainer::run_dir::RunDir;
use pglm_trainer::{TrainConfig, Trainer};

fn weights(t: &Trainer<f32>) -> Vec<Vec<u32>> {
    t.model().params.iter().map(|(_, p)| p.value().iter().map(|x| x.to_bits()).collect()).collect()
}

fn config_with_dropout(data: &Path) -> TrainConfig {
    let mut c = tiny_sft_config(data);
    c.model.dropout = 0.1; // dropout seeds must be reproduced too
    c
}

#[test]
fn resumed_run_equals_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    addition_data(dir.path(), 64, 8);
    let config = config_with_dropout(dir.path());

    let full_dir = dir.path().join("full");
    let mut full = Trainer::<f32>::new(config.clone(), &full_dir).unwrap();
    let summary = full.run().unwrap();
    assert_eq!(summary.steps, 10);

    // Interrupted after step 9: checkpoint at 8, one more metrics line that must be redone.
    let cut_dir = dir.path().join("cut");
    let mut cut = Trainer::<f32>::new(config, &cut_dir).unwrap();
    for _ in 0..9 {
        cut.step().unwrap();
    }
    drop(cut);
    assert_eq!(read_metrics(&cut_dir.join("metrics.jsonl")).unwrap().len(), 9);
    let mut resumed = Trainer::<f32>::resume(&cut_dir).unwrap();
    assert_eq!(resumed.steps_done(), 8);
    resumed.run().unwrap();

    let a = read_metrics(&full_dir.join("metrics.jsonl")).unwrap();
    let b = read_metrics(&cut_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(a.len(), 10);
    let (a, b): (Vec<_>, Vec<_>) =
        (a.iter().map(reproducible).collect(), b.iter().map(reproducible).collect());
    assert_eq!(a, b);
    assert!(a[2].get("eval_loss").is_some() && a[2].get("eval_accuracy").is_some(), "{:?}", a[2]);
    assert_eq!(weights(&full), weights(&resumed));
    // keep_checkpoints = 2: steps 8 and 10 remain.
    let mut names: Vec<String> = std::fs::read_dir(full_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["step-00000008.ckpt", "step-00000010.ckpt"]);
}

/// The child side of the kill test: trains with a checkpoint after every step until killed.
#[test]
fn kill_test_child() {
    let Ok(run_dir) = std::env::var("PGLM_TRAINER_KILL_CHILD") else { return };
    let mut trainer = Trainer::<f32>::resume(&run_dir).unwrap();
    loop {
        trainer.step().unwrap();
    }
}

/// The step of the checkpoint `latest` names (read without touching the run: the child is writing).
fn latest_step(run_dir: &Path) -> u64 {
    let Some(path) = RunDir::new(run_dir).latest().unwrap() else { return 0 };
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    name.trim_start_matches("step-").trim_end_matches(".ckpt").parse().unwrap()
}

#[test]
fn process_killed_while_checkpointing_leaves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    addition_data(dir.path(), 64, 8);
    let mut config = tiny_sft_config(dir.path());
    // A wider model so that each checkpoint takes a while to write; a checkpoint every step.
    config.model = pglm_model::GptConfig::new(0, 16, 2, 2, 64);
    config.data.task = None;
    config.run.steps = 1_000_000;
    config.run.eval_every = 0;
    config.run.checkpoint_every = 1;
    let run_dir = dir.path().join("run");
    let mut first = Trainer::<f32>::new(config, &run_dir).unwrap();
    first.step().unwrap();
    first.save_checkpoint().unwrap();
    drop(first);

    let exe = std::env::current_exe().unwrap();
    for (round, delay_ms) in [150u64, 230, 310].into_iter().enumerate() {
        let before = Trainer::<f32>::resume(&run_dir).unwrap().steps_done();
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_test_child", "--nocapture", "--test-threads=1"])
            .env("PGLM_TRAINER_KILL_CHILD", &run_dir)
            .spawn()
            .unwrap();
        // Wait until the child has made progress, then kill it (SIGKILL) at an arbitrary moment.
        let start = Instant::now();
        while latest_step(&run_dir) < before + 2 {
            assert!(start.elapsed() < Duration::from_secs(60), "round {round}: the child made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let torn = std::fs::read_dir(run_dir.join("checkpoints"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp"))
            .count();
        eprintln!("round {round}: killed after {delay_ms} ms, {torn} torn temp file(s) left");
        // `latest` names a complete checkpoint, and the run resumes and steps from it.
        let mut resumed = Trainer::<f32>::resume(&run_dir).unwrap();
        assert!(resumed.steps_done() >= before + 2);
        resumed.step().unwrap();
        let metrics = read_metrics(&run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.last().unwrap().step, resumed.steps_done());
    }
}
