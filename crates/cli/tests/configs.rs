//! Every example config in configs/ starts a run on its task's data and takes a step: keys valid,
//! sequence lengths long enough for every example.

mod common;

use std::path::Path;

use common::ok;

#[test]
fn every_example_config_trains() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("configs")).unwrap();
    let mut seen = 0;
    let mut rl = Vec::new();
    for entry in std::fs::read_dir(repo.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let config = format!("configs/{name}.toml");
        std::fs::copy(&path, d.join(&config)).unwrap();
        let one_step = ["--set", "run.steps=1", "--set", "run.eval_batches=1", "--quiet"];
        if let Some(task) = name.strip_prefix("sft-") {
            ok(d, &["data", task, "--n", "300", "--test-n", "8", "--out", &format!("data/{task}")]);
            let run = format!("runs/{name}");
            ok(d, &[&["sft", "--config", &config, "--run", &run][..], &one_step].concat());
        } else if name.starts_with("pretrain-") {
            let corpus: String = (0..400).map(|i| format!("line {i}: the quick brown fox.\n")).collect();
            std::fs::write(d.join("corpus.txt"), corpus).unwrap();
            let run = format!("runs/{name}");
            let args = ["pretrain", "--config", &config, "--run", &run, "--set", "data.train=corpus.txt"];
            ok(d, &[&args[..], &one_step].concat());
        } else if name.starts_with("rl-") {
            rl.push((name, config)); // after the SFT runs they start from
            continue;
        } else {
            panic!(
                "configs/{name}.toml: name it sft-<task>, pretrain-<what> or rl-<task> so that this test runs it"
            );
        }
        seen += 1;
    }
    // RL configs start from `runs/sft-<task>`, which the loop above trained for a step.
    for (name, config) in rl {
        let run = format!("runs/{name}");
        let args = ["rl", "--config", &config, "--run", &run, "--set", "task.eval_examples=4"];
        ok(d, &[&args[..], &["--set", "run.steps=1", "--quiet"][..]].concat());
        seen += 1;
    }
    assert!(seen >= 11, "{seen} configs");
}
