//! Every built-in task: generated answers score the maximum, wrong formats never do.

use super::*;
use crate::countdown::{Verdict, judge};
use crate::rng::Rng;
use crate::{RewardInput, Score};
use proptest::prelude::*;
use serde_json::json;

fn all_tasks() -> Vec<Box<dyn Task>> {
    let mut tasks: Vec<Box<dyn Task>> =
        BUILTIN_TASKS.iter().map(|n| builtin_task(n, &Value::Null).unwrap()).collect();
    tasks.push(
        builtin_task("countdown", &json!({"prompt": "tinyzero", "min_count": 3, "max_count": 3})).unwrap(),
    );
    tasks.push(builtin_task("multiplication", &json!({"digits": 1, "digits_b": 5})).unwrap());
    tasks
}

fn score(task: &dyn Task, ex: &Example, completion: &str) -> Score {
    task.reward().score(&RewardInput::new(&ex.prompt, completion, &ex.reference)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_answers_score_the_maximum(seed in any::<u64>()) {
        for task in all_tasks() {
            let ex = task.sample(&mut Rng::new(seed));
            prop_assert!(task.reward().check_reference(&ex.reference).is_ok());
            prop_assert_eq!(score(&*task, &ex, &ex.completion), Score::Value(1.0), "{} {:?}", task.name(), ex);
        }
    }

    #[test]
    fn completions_without_the_format_never_score_the_maximum(seed in any::<u64>(), junk in "[a-z<>/ ]{0,30}") {
        for task in all_tasks() {
            let ex = task.sample(&mut Rng::new(seed));
            if junk.trim() == ex.completion.trim() {
                continue;
            }
            let s = score(&*task, &ex, &junk).value().unwrap();
            prop_assert!(s < 1.0, "{} {:?} scored {s} on {junk:?}", task.name(), ex);
        }
    }

    #[test]
    fn countdown_format_completions_score_exactly_the_format_score(seed in any::<u64>()) {
        let task = CountdownTask::new(CountdownConfig::default()).unwrap();
        let mut rng = Rng::new(seed);
        let ex = task.sample(&mut rng);
        let nums: Vec<i128> = ex.reference["numbers"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap() as i128).collect();
        let target = ex.reference["target"].as_i64().unwrap() as i128;
        prop_assert!(nums.len() == 3 || nums.len() == 4);
        prop_assert!(nums.iter().all(|n| (1..=50).contains(n)) && (1..=100).contains(&target));
        let c = task.format_completion(&ex, &mut rng).unwrap();
        prop_assert!(matches!(judge(&c, &nums, target), Verdict::Miss(_)), "{c}");
        prop_assert_eq!(score(&task, &ex, &c), Score::Value(0.1));
    }
}

#[test]
fn prompts_are_compact() {
    let add = builtin_task("addition", &json!({"digits": 3})).unwrap();
    for seed in 0..200 {
        let ex = add.sample(&mut Rng::new(seed));
        let (a, b) = ex.prompt.strip_suffix('=').unwrap().split_once('+').unwrap();
        assert!(a.len() <= 3 && b.len() <= 3, "{}", ex.prompt);
        assert_eq!(
            a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap(),
            ex.completion.parse::<i64>().unwrap()
        );
    }
    let sub = builtin_task("subtraction", &Value::Null).unwrap();
    assert!((0..200).any(|s| sub.sample(&mut Rng::new(s)).completion.starts_with('-')));
    let cd = builtin_task("countdown", &Value::Null).unwrap().sample(&mut Rng::new(3));
    assert!(cd.prompt.starts_with("Make ") && cd.prompt.ends_with(':'), "{}", cd.prompt);
    assert!(cd.completion.starts_with("<answer>") && cd.completion.ends_with("</answer>"));
    let tz = builtin_task("countdown", &json!({"prompt": "tinyzero"})).unwrap().sample(&mut Rng::new(3));
    assert!(
        tz.prompt.contains("Using the numbers [")
            && tz.prompt.ends_with("Assistant: Let me solve this step by step.\n<think>")
    );
    let rev = builtin_task("reverse", &Value::Null).unwrap().sample(&mut Rng::new(1));
    let input = rev.prompt.strip_prefix("reverse ").unwrap().strip_suffix('=').unwrap();
    assert_eq!(input.chars().rev().collect::<String>(), rev.completion);
    let sent = builtin_task("sentiment", &Value::Null).unwrap().sample(&mut Rng::new(1));
    assert!(
        sent.prompt.ends_with(" sentiment:") && ["positive", "negative"].contains(&sent.completion.as_str())
    );
}

#[test]
fn examples_are_pinned() {
    // These bytes must never change: datasets are reproduced from their seed.
    let ex = builtin_task("addition", &Value::Null).unwrap().sample(&mut Rng::new(1));
    let cd = builtin_task("countdown", &Value::Null).unwrap().sample(&mut Rng::new(1));
    let got = format!("{} {} | {} {} {}", ex.prompt, ex.completion, cd.prompt, cd.completion, cd.reference);
    assert_eq!(got, PINNED);
}

const PINNED: &str = "719+5= 724 | Make 48 from 20 41 36 12: <answer>12*20/(41-36)</answer> {\"numbers\":[20,41,36,12],\"target\":48}";

#[test]
fn configs_round_trip_and_errors_are_clear() {
    for task in all_tasks() {
        let again = builtin_task(task.name(), &task.config()).unwrap();
        assert_eq!(again.config(), task.config());
        assert_eq!(again.sample(&mut Rng::new(9)), task.sample(&mut Rng::new(9)));
    }
    let e = builtin_task("addition", &json!({"digits": 0})).err().unwrap().to_string();
    assert!(e.contains("1 to 18"), "{e}");
    let e = builtin_task("addition", &json!({"digitz": 2})).err().unwrap().to_string();
    assert!(e.contains("digitz"), "{e}");
    let e = builtin_task("countdown", &json!({"min_count": 5, "max_count": 4})).err().unwrap().to_string();
    assert!(e.contains("min_count"), "{e}");
    let e = builtin_task("countdown", &json!({"prompt": "chatml"})).err().unwrap().to_string();
    assert!(e.contains("chatml"), "{e}");
    assert!(builtin_task("reverse", &json!({"alphabet": "a b"})).is_err());
    assert!(matches!(builtin_task("poetry", &Value::Null), Err(TaskError::Unknown(_))));
}
