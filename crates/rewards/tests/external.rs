//! The external reward process against small Python programs that answer, hang, crash or babble.

use pglm_rewards::{ExternalReward, Reward, RewardError, RewardInput, Score};
use serde_json::json;
use std::time::{Duration, Instant};

fn script(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn external(name: &str, timeout_ms: u64) -> ExternalReward {
    ExternalReward::new(&["python3".to_string(), script(name)])
        .unwrap()
        .timeout(Duration::from_millis(timeout_ms))
}

fn failure(r: Result<Score, RewardError>) -> (String, String, String) {
    match r {
        Err(RewardError::External { command, example, reason }) => (command, example, reason),
        other => panic!("expected an external failure, got {other:?}"),
    }
}

#[test]
fn answers_in_order_with_unscorable_and_errors() {
    let r = external("answer.py", 10_000);
    assert_eq!(r.name(), "external");
    let gold = json!({"answer": "42"});
    let texts = ["42", "abc", "?", "héllo\nwörld", "", "!", "42"];
    let inputs: Vec<_> = texts.iter().map(|t| RewardInput::new("6*7=", t, &gold)).collect();
    let out = r.score_batch(&inputs);
    let total = |i: usize| out[i].as_ref().unwrap().total;
    assert_eq!(total(0), Score::Value(1.0));
    assert_eq!(total(1), Score::Value(0.03));
    assert_eq!(total(2), Score::Unscorable);
    assert_eq!(total(3), Score::Value(0.11));
    assert_eq!(total(4), Score::Value(0.0));
    let e = out[5].as_ref().unwrap_err().to_string();
    assert!(e.contains("cannot judge 6*7=") && e.contains("batch item 5") && e.contains("answer.py"), "{e}");
    // After the error the program was restarted, and answers again.
    assert_eq!(total(6), Score::Value(1.0));
}

#[test]
fn arguments_reach_the_program_without_a_shell() {
    let r = ExternalReward::new(&["python3", &script("answer.py"), "$HOME; echo hi"]).unwrap();
    let reference = json!({});
    assert_eq!(r.score(&RewardInput::new("p", "c", &reference)).unwrap(), Score::Value(14.0));
}

#[test]
fn a_hanging_program_times_out() {
    let r = external("hang.py", 400);
    let reference = json!({"answer": "1"});
    let start = Instant::now();
    let (command, example, reason) = failure(r.score(&RewardInput::new("1+0=", "1", &reference)));
    assert!(command.contains("hang.py"), "{command}");
    assert!(example.contains("1+0="), "{example}");
    assert!(reason.contains("no answer within"), "{reason}");
    // Restarted, and times out again rather than hanging.
    failure(r.score(&RewardInput::new("1+0=", "1", &reference)));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn a_crashing_program_is_reported_with_its_stderr() {
    let r = external("crash.py", 10_000);
    let reference = json!({});
    assert_eq!(r.score(&RewardInput::new("first", "x", &reference)).unwrap(), Score::Value(0.5));
    let (command, example, reason) = failure(r.score(&RewardInput::new("second", "x", &reference)));
    assert!(command.contains("crash.py"), "{command}");
    assert!(example.contains("second"), "{example}");
    assert!(reason.contains("exited") && reason.contains("boom: out of cheese"), "{reason}");
    // A fresh process answers the next request.
    assert_eq!(r.score(&RewardInput::new("third", "x", &reference)).unwrap(), Score::Value(0.5));
}

#[test]
fn garbage_is_a_malformed_answer() {
    let r = external("garbage.py", 10_000);
    let reference = json!({});
    let (_, example, reason) = failure(r.score(&RewardInput::new("what?", "x", &reference)));
    assert!(example.contains("what?"), "{example}");
    assert!(reason.contains("malformed answer") && reason.contains("the score is high"), "{reason}");
}

#[test]
fn a_program_that_exits_at_once_is_reported() {
    let r = ExternalReward::new(&["python3", "-c", "import sys; sys.exit(7)"]).unwrap();
    let reference = json!({});
    let (_, _, reason) = failure(r.score(&RewardInput::new("p", "c", &reference)));
    assert!(reason.contains("exit"), "{reason}");
}

#[test]
fn extra_answer_lines_are_caught() {
    let r = external("chatty.py", 10_000);
    let reference = json!({});
    assert_eq!(r.score(&RewardInput::new("a", "x", &reference)).unwrap(), Score::Value(0.25));
    // Give the second line time to arrive, as it would during a real batch.
    std::thread::sleep(Duration::from_millis(200));
    let (_, example, reason) = failure(r.score(&RewardInput::new("b", "x", &reference)));
    assert!(example.contains("\"b\"") && reason.contains("nobody asked for"), "{reason}");
    assert_eq!(r.score(&RewardInput::new("c", "x", &reference)).unwrap(), Score::Value(0.25));
}
