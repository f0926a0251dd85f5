//! Ctrl-C during training saves a checkpoint and exits with 130; `--resume` continues the run to
//! the end, and the metrics of the two halves join into one run.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bin, ok, setup_sft};

fn metric_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 1500;
    // No periodic checkpoints: the only one before the end is Ctrl-C's.
    setup_sft(d, steps, 0);
    let mut child = bin()
        .args(["sft", "--config", "sft.toml", "--run", "r", "--quiet"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = d.join("r/metrics.jsonl");
    let start = Instant::now();
    while metric_lines(&metrics) < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "training did not start");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("checkpoint saved") && err.contains("--resume"), "{err}");

    let latest = std::fs::read_to_string(d.join("r/latest")).unwrap();
    let saved_step: u64 =
        latest.trim().trim_start_matches("checkpoints/step-").trim_end_matches(".ckpt").parse().unwrap();
    assert!(saved_step >= 3 && saved_step < steps, "saved at step {saved_step}");
    assert_eq!(metric_lines(&metrics) as u64, saved_step);

    ok(d, &["sft", "--run", "r", "--resume", "--quiet"]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let got: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (1..=steps).collect::<Vec<_>>(), "one line per step, in order");
    assert!(d.join(format!("r/checkpoints/step-{steps:08}.ckpt")).exists());
}
