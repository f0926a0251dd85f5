//! Training runs end to end: learning, stop condition, guard, and bad input as typed errors.

mod common;

use std::path::Path;

use common::{addition_data, tiny_sft_config};
use pglm_model::GptConfig;
use pglm_model::tokenizer::{CharTokenizer, Tokenizer};
use pglm_trainer::metrics::read_metrics;
use pglm_trainer::{DataKind, StopCondition, TokenizerConfig, TrainConfig, TrainError, Trainer};

#[test]
fn pretraining_lowers_the_loss_on_a_repetitive_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "the cat sat on the mat. ".repeat(40)).unwrap();
    let mut c = TrainConfig::sft(&corpus, GptConfig::new(0, 16, 1, 2, 32), 16);
    c.data.kind = DataKind::Text;
    c.data.holdout = 4;
    c.optim.lr = 1e-2;
    c.optim.warmup_steps = 2;
    c.run.steps = 30;
    c.run.eval_every = 10;
    c.run.checkpoint_every = 0;
    let mut t = Trainer::<f32>::new(c, dir.path().join("run")).unwrap();
    t.run().unwrap();
    let m = read_metrics(&dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 30);
    let (first, last) = (m[0].loss.unwrap(), m[29].loss.unwrap());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    assert!(m[9].eval_loss.unwrap() > m[29].eval_loss.unwrap());
    assert!(m[0].lr < m[1].lr && m[29].lr < m[2].lr, "warmup then decay");
    assert!(dir.path().join("run/checkpoints/step-00000030.ckpt").exists(), "final checkpoint");
}

#[test]
fn stop_condition_ends_the_run_at_the_first_evaluation_reaching_it() {
    let dir = tempfile::tempdir().unwrap();
    addition_data(dir.path(), 32, 8);
    let mut c = tiny_sft_config(dir.path());
    c.run.stop = Some(StopCondition { metric: "eval_loss".into(), target: 1e6 });
    let mut t = Trainer::<f32>::new(c, dir.path().join("run")).unwrap();
    let s = t.run().unwrap();
    assert!(s.stopped_early);
    assert_eq!(s.steps, 3); // eval_every = 3
    assert_eq!(s.checkpoint.unwrap(), dir.path().join("run/checkpoints/step-00000003.ckpt"));
}

#[test]
fn nonfinite_steps_are_skipped_then_stop_the_run_naming_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    addition_data(dir.path(), 32, 8);
    let mut c = tiny_sft_config(dir.path());
    c.run.max_nonfinite_in_a_row = 3;
    c.run.checkpoint_every = 2;
    let mut t = Trainer::<f32>::new(c, dir.path().join("run")).unwrap();
    t.step().unwrap();
    t.step().unwrap();
    let before = t.model().params.iter().map(|(_, p)| p.value().clone()).collect::<Vec<_>>();
    // Poison one weight: every loss from here on is NaN.
    let id = t.model().params.id("ln_f.bias").unwrap();
    t.model_mut().params.get_mut(id).value_mut()[[0]] = f32::NAN;
    for _ in 0..2 {
        let m = t.step().unwrap();
        assert!(m.skipped && m.loss.is_none());
    }
    let err = t.step().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::NonFinite { step: 5, in_a_row: 3, .. }), "{msg}");
    assert!(msg.contains("step-00000002.ckpt"), "{msg}");
    let m = read_metrics(&dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m[4].nonfinite_total, 3);
    // Skipped steps left every other weight as it was.
    let id0 = t.model().params.id("wte.weight").unwrap();
    assert_eq!(t.model().params.value(id0), &before[id0.0]);
}

fn expect_err(config: TrainConfig, run: &Path) -> String {
    match Trainer::<f32>::new(config, run) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_gives_errors_naming_file_line_or_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    addition_data(d, 16, 8);

    // An empty corpus.
    let empty = d.join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let mut c = tiny_sft_config(d);
    c.data =
        pglm_trainer::DataConfig { kind: DataKind::Text, train: empty, eval: None, holdout: 0, task: None };
    let msg = expect_err(c, &d.join("r1"));
    assert!(msg.contains("empty.txt") && msg.contains("empty"), "{msg}");

    // A dataset line without its completion.
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"1+1=\",\"completion\":\"2\"}\n{\"prompt\":\"2+2=\"}\n").unwrap();
    let mut c = tiny_sft_config(d);
    c.data.train = bad;
    let msg = expect_err(c, &d.join("r2"));
    assert!(msg.contains("bad.jsonl:2") && msg.contains("completion"), "{msg}");

    // A tokenizer that cannot encode the data.
    let tok_path = d.join("tok.json");
    Tokenizer::Char(CharTokenizer::from_corpus("0123456789+")).save_json(&tok_path).unwrap();
    let mut c = tiny_sft_config(d);
    c.tokenizer = TokenizerConfig::File { path: tok_path };
    c.data.task = None;
    let sft = d.join("eq.jsonl");
    std::fs::write(
        &sft,
        "{\"prompt\":\"1+1\",\"completion\":\"2\"}\n{\"prompt\":\"1+2=\",\"completion\":\"3\"}\n",
    )
    .unwrap();
    c.data.train = sft;
    let msg = expect_err(c, &d.join("r3"));
    assert!(msg.contains("eq.jsonl:2: field `prompt`") && msg.contains("'='"), "{msg}");

    // A batch larger than the data (16 examples, 8 held out, batch of 16).
    let mut c = tiny_sft_config(d);
    c.batch.batch_size = 16;
    let msg = expect_err(c, &d.join("r4"));
    assert!(msg.contains("sft.jsonl") && msg.contains("8 training sequences") && msg.contains("16"), "{msg}");

    // A context longer than the model's.
    let mut c = tiny_sft_config(d);
    c.batch.seq_len = 17;
    let msg = expect_err(c, &d.join("r5"));
    assert!(msg.contains("batch.seq_len") && msg.contains("context_length = 16"), "{msg}");

    // An example longer than the training context.
    let mut c = tiny_sft_config(d);
    c.batch.seq_len = 5;
    let msg = expect_err(c, &d.join("r6"));
    assert!(msg.contains("sft.jsonl:") && msg.contains("batch.seq_len + 1 = 6"), "{msg}");
}

#[test]
fn checkpoint_of_another_model_config_is_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    addition_data(d, 16, 8);
    let small = tiny_sft_config(d);
    let mut wide = tiny_sft_config(d);
    wide.model.n_embd = 32;
    let mut a = Trainer::<f32>::new(small, d.join("a")).unwrap();
    a.step().unwrap();
    let ckpt = a.save_checkpoint().unwrap();
    Trainer::<f32>::new(wide, d.join("b")).unwrap().step().unwrap();
    std::fs::copy(&ckpt, d.join("b/checkpoints/step-00000001.ckpt")).unwrap();
    std::fs::write(d.join("b/latest"), "checkpoints/step-00000001.ckpt\n").unwrap();
    let err = Trainer::<f32>::resume(d.join("b")).err().expect("a mismatch");
    let msg = err.to_string();
    assert!(matches!(err, TrainError::CheckpointMismatch { .. }), "{msg}");
    assert!(msg.contains("model.n_embd") && msg.contains("16") && msg.contains("32"), "{msg}");
    // And a directory without checkpoints says so.
    let mut c = tiny_sft_config(d);
    c.run.steps = 1;
    drop(Trainer::<f32>::new(c, d.join("c")).unwrap());
    let msg = Trainer::<f32>::resume(d.join("c")).err().unwrap().to_string();
    assert!(msg.contains("no checkpoint"), "{msg}");
    // A new run in an existing run directory is refused.
    let msg = expect_err(tiny_sft_config(d), &d.join("a"));
    assert!(msg.contains("already holds a run"), "{msg}");
}
