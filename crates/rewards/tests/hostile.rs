//! Every built-in reward against hostile completions, and parsers against arbitrary input.

use pglm_rewards::dataset::{parse_dataset, parse_sft};
use pglm_rewards::normalize::normalize_answer;
use pglm_rewards::{
    Countdown, EditDistance, ExactMatch, FormatReward, Gsm8k, LabelMatch, LengthPenalty, OverlongPenalty,
    Reward, RewardInput, Score, WeightedSum, extract_gsm8k,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// (reward, a reference for it, the correct completion, the maximum score)
fn rewards() -> Vec<(Box<dyn Reward>, Value, &'static str, f64)> {
    vec![
        (Box::new(ExactMatch::new()), json!({"answer": "42"}), "42", 1.0),
        (Box::new(Gsm8k::strict()), json!({"answer": "42"}), "#### 42", 1.0),
        (Box::new(Gsm8k::flexible()), json!({"answer": "42"}), "so 42", 1.0),
        (Box::new(FormatReward::think_answer()), json!({}), "<think>a</think><answer>b</answer>", 1.0),
        (
            Box::new(Countdown::new()),
            json!({"numbers": [3, 5, 7, 2], "target": 30}),
            "<answer>(7+3)*(5-2)</answer>",
            1.0,
        ),
        (Box::new(LabelMatch::new(&["yes", "no"])), json!({"label": "yes"}), "yes", 1.0),
        (Box::new(EditDistance::new()), json!({"answer": "abc"}), "abc", 1.0),
        (
            Box::new(
                WeightedSum::new()
                    .add(1.0, Countdown::new())
                    .add(0.5, FormatReward::new("<answer>").unwrap()),
            ),
            json!({"numbers": [3, 5, 7, 2], "target": 30}),
            "<answer>(7+3)*(5-2)</answer>",
            1.5,
        ),
    ]
}

fn hostile() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "\n\n\n".into(),
        "__import__('os').system('rm -rf /')".into(),
        "<answer>__import__('os')</answer>".into(),
        "<answer>(7+3)*(5-2)*7</answer>".into(),
        "<answer>(7+3)*5</answer>".into(),
        "<answer>7/(5-5)*3*2</answer>".into(),
        "<answer>1</answer><answer>2</answer><answer>3</answer>".into(),
        "٤٢ ۴۲ ４２".into(),
        "#### ٤٢".into(),
        format!("<answer>{}1{}</answer>", "(".repeat(10_000), ")".repeat(10_000)),
        format!("#### {}", "9".repeat(5_000)),
        "9".repeat(1_000_000),
        "<think>".repeat(1000),
        "\u{0}\u{7f}\u{feff}\u{202e}".into(),
        "eval(\"1+1\")".into(),
    ]
}

#[test]
fn correct_completions_score_the_maximum() {
    for (r, reference, good, max) in rewards() {
        let s = r.score(&RewardInput::new("p", good, &reference)).unwrap();
        assert_eq!(s, Score::Value(max), "{}", r.name());
    }
}

#[test]
fn hostile_completions_never_score_the_maximum() {
    let texts = hostile();
    for (r, reference, _, max) in rewards() {
        let inputs: Vec<_> = texts.iter().map(|t| RewardInput::new("p", t, &reference)).collect();
        for (t, out) in texts.iter().zip(r.score_batch(&inputs)) {
            let s = out.unwrap().total.value().unwrap();
            let head: String = t.chars().take(40).collect();
            assert!(s.is_finite() && s < max, "{} gave {s} on {head:?}", r.name());
        }
    }
}

#[test]
fn length_rewards_ignore_content() {
    let reference = json!({});
    for t in hostile() {
        let x = RewardInput::new("p", &t, &reference).with_len(t.len());
        let o = OverlongPenalty::new(100, 20).unwrap().score(&x).unwrap().value().unwrap();
        assert!((-1.0..=0.0).contains(&o));
        let l = LengthPenalty::new(0.001, 0).score(&x).unwrap().value().unwrap();
        assert!(l <= 0.0 && l.is_finite());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scoring_never_panics(text in any::<String>()) {
        for (r, reference, _, _) in rewards() {
            let s = r.score(&RewardInput::new("p", &text, &reference)).unwrap();
            prop_assert!(s.value().unwrap().is_finite());
        }
        let _ = normalize_answer(&text);
        let _ = extract_gsm8k(&text, pglm_rewards::Gsm8kMode::Flexible, Some(300));
    }

    #[test]
    fn dataset_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), text in any::<String>()) {
        let _ = parse_dataset(&bytes, "x.jsonl");
        let _ = parse_sft(&bytes, "x.jsonl");
        let _ = parse_dataset(text.as_bytes(), "x.jsonl");
    }
}
