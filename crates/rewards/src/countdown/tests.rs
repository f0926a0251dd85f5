//! The countdown reward on hand-written and hostile completions.

use super::*;
use proptest::prelude::*;
use serde_json::json;

const NUMS: [i128; 4] = [3, 5, 7, 2];

fn verdict(c: &str) -> Verdict {
    judge(c, &NUMS, 30)
}

#[test]
fn table_of_completions() {
    use Verdict::*;
    let cases: Vec<(String, f64)> = vec![
        ("<answer>(3+5)*(7-2)-10</answer>".into(), 0.1),
        ("<answer>(7-2)*(3+5)</answer>".into(), 0.1),
        ("<answer>(7-2+3)*5-2*5</answer>".into(), 0.1),
        ("<answer>(2+3)*(7-5)*3</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)</answer>".into(), 1.0),
        ("<answer> (7 + 3) * (5 - 2) </answer>".into(), 1.0),
        ("<think>try</think>\n<answer>(7+3)*(5-2)</answer>".into(), 1.0),
        ("reasoning <answer>1</answer> more <answer>(7+3)*(5-2)</answer>".into(), 1.0),
        ("<answer>(7+3)*(5-2)</answer> <answer>7*3+5+2</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)</answer>\n".into(), 0.0),
        ("<answer>(7+3)*(5-2)</answer>\ndone".into(), 0.0),
        ("<answer>\n(7+3)*(5-2)\n</answer>".into(), 0.0),
        ("(7+3)*(5-2)".into(), 0.0),
        ("<answer>(7+3)*(5-2)".into(), 0.0),
        ("".into(), 0.0),
        ("<answer></answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)*3</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)+0</answer>".into(), 0.1),
        ("<answer>(7+3)*3</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)/(2-2)</answer>".into(), 0.1),
        ("<answer>7/(5-3-2)</answer>".into(), 0.1),
        ("<answer>3/(7-5-2)</answer>".into(), 0.1),
        ("<answer>__import__('os').system('true')</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2)#</answer>".into(), 0.1),
        ("<answer>(7+3)*(5−2)</answer>".into(), 0.1),
        ("<answer>(٧+3)*(5-2)</answer>".into(), 0.1),
        ("<answer>(7+3)*(5-2.0)</answer>".into(), 0.1),
        ("<answer>(7+3)**1*(5-2)</answer>".into(), 0.1),
        ("<answer>99999999999999999999999999999999999999999*3+5+7+2</answer>".into(), 0.1),
        (format!("<answer>{}(7+3)*(5-2){}</answer>", "(".repeat(500), ")".repeat(500)), 0.1),
        (format!("<answer>{}(7+3)*(5-2){}</answer>", "(".repeat(50), ")".repeat(50)), 1.0),
        (format!("{}<answer>(7+3)*(5-2)</answer>", "x".repeat(1_000_000)), 1.0),
        (format!("<answer>{}</answer>", "1+".repeat(100_000)), 0.1),
        ("<answer>-(3-7)*5+2*5</answer>".into(), 0.1),
        ("<answer>7*5-3-2</answer>".into(), 1.0),
        ("<answer>05*7-3-2</answer>".into(), 0.1),
        ("<answer>7*5-3-2\x1c</answer>".into(), 1.0),
        ("<answer>7*5-3-2\u{a0}</answer>".into(), 1.0),
        ("<answer>7*5\t-3-2</answer>".into(), 1.0),
        ("<answer>7*5\x0b-3-2</answer>".into(), 0.1),
        ("<answer>7*5\x0c-3-2</answer>".into(), 1.0),
        ("<answer>7*5\r-3-2</answer>".into(), 0.1),
        ("<answer>+7*5-+3-2</answer>".into(), 1.0),
    ];
    // Every expected score above is what TinyZero's `compute_score` returns on "Assistant:" + completion
    // (checked with Python 3 while writing this table).
    for (c, want) in &cases {
        let v = verdict(c);
        let head: String = c.chars().take(80).collect();
        assert_eq!(v.score(1.0, 0.1), *want, "{head:?}: {v:?}");
    }
    assert_eq!(verdict("<answer>7/(5-3-2)</answer>"), Unevaluable(ArithError::DivisionByZero));
    assert_eq!(verdict("<answer>(7+3)*3</answer>"), WrongNumbers { used: vec![7, 3, 3] });
    assert_eq!(verdict("<answer>(2+3)*(7-5)*3</answer>"), WrongNumbers { used: vec![2, 3, 7, 5, 3] });
    assert_eq!(verdict("<answer>7*5/3-2</answer>"), Miss(Rational::new(29, 3).unwrap()));
    assert!(matches!(verdict("<answer>(7+3)**1*(5-2)</answer>"), Malformed(ExprError::Power(_))));
    assert_eq!(verdict("no tags"), NoAnswer);
}

#[test]
fn deliberate_differences_from_tinyzero() {
    // Each of these scores 1.0 in TinyZero (Python float `eval`) and 0.1 here; see docs/REWARDS.md.
    let miss = judge("<answer>10000000/10000001*24</answer>", &[10000000, 10000001, 24], 24);
    assert!(matches!(miss, Verdict::Miss(_)), "within 1e-5 but not equal: {miss:?}");
    let power = judge("<answer>2**3*5-7</answer>", &[2, 3, 5, 7], 33);
    assert!(matches!(power, Verdict::Malformed(ExprError::Power(_))), "{power:?}");
    let decimal = judge("<answer>1.5*2</answer>", &[1, 5, 2], 3);
    assert!(matches!(decimal, Verdict::Malformed(ExprError::BadChar { ch: '.', .. })), "{decimal:?}");
    let floor = judge("<answer>7//2+1</answer>", &[7, 2, 1], 4);
    assert!(matches!(floor, Verdict::Malformed(ExprError::FloorDivision(_))), "{floor:?}");
    // Where floats round to the right answer, exact arithmetic agrees.
    assert_eq!(judge("<answer>(1/3+1/3+1/3)*8</answer>", &[1, 3, 1, 3, 1, 3, 8], 8), Verdict::Hit);
}

#[test]
fn reward_reads_tinyzero_ground_truth() {
    let r = Countdown::new();
    let gt = json!({"target": 30, "numbers": [3, 5, 7, 2]});
    let s = |c: &str| r.score(&RewardInput::new("p", c, &gt)).unwrap().value().unwrap();
    assert_eq!(s("<answer>(7+3)*(5-2)</answer>"), 1.0);
    assert_eq!(s("<answer>7+3</answer>"), 0.1);
    assert_eq!(s("7+3"), 0.0);
    let bad = json!({"target": "thirty", "numbers": [3]});
    let e = r.score(&RewardInput::new("p", "x", &bad)).unwrap_err().to_string();
    assert!(e.contains("`numbers`") || e.contains("`target`"), "{e}");
    assert!(r.check_reference(&json!({"numbers": [1, 2]})).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = judge(&s, &NUMS, 30);
        let _ = parse(&s);
        let _ = judge(&format!("<answer>{s}</answer>"), &NUMS, 30);
    }

    #[test]
    fn never_panics_on_equation_alphabet(s in "[0-9+*/() -]{0,200}") {
        let v = judge(&format!("<answer>{s}</answer>"), &NUMS, 30);
        prop_assert_ne!(v, Verdict::NoAnswer);
    }

    #[test]
    fn without_answer_tags_scores_zero(s in "[^<]{0,300}") {
        prop_assert_eq!(judge(&s, &NUMS, 30), Verdict::NoAnswer);
    }
}
