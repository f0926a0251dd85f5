//! `pglm quickstart --quick`: the whole pipeline in seconds, and what it leaves behind.

mod common;

use common::ok;

#[test]
fn the_quick_quickstart_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(d, &["quickstart", "--quick", "--out", "qs", "--quiet"]);
    assert!(out.contains("accuracy") && out.contains("after SFT") && out.contains("pass@2"), "{out}");
    for f in [
        "data/test.jsonl",
        "sft/metrics.jsonl",
        "sft/eval.json",
        "plots/loss.svg",
        "plots/eval_accuracy.svg",
        "summary.json",
    ] {
        assert!(d.join("qs").join(f).exists(), "{f} missing; stdout:\n{out}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("qs/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["results"][0]["model"], "after SFT");
    assert!(summary["results"][0]["eval"]["accuracy"].is_number());

    // Again in the same directory: the finished SFT run is reused, not refused.
    let again = ok(d, &["quickstart", "--quick", "--out", "qs", "--quiet"]);
    assert!(again.contains("after SFT"), "{again}");
}
