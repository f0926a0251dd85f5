//! How much throughput the training loop loses to its infrastructure: the step time of
//! `Trainer::step` (data order, batching, accumulation, clipping, guard, metrics line) against a
//! bare `loss + backward + AdamW` on one fixed batch of the same shape.
//!
//! `cargo run --release -p pglm-trainer --example overhead [-- ROUNDS STEPS_PER_ROUND]`
//!
//! Rounds alternate between the two loops so that load from other processes hits both alike;
//! the median step time of each is reported.

use std::time::Instant;

use pglm_autograd::Tape;
use pglm_autograd::optim::{AdamW, Optimizer};
use pglm_model::{Gpt, GptConfig};
use pglm_trainer::data::{Batch, Sequence};
use pglm_trainer::{DataKind, TrainConfig, Trainer, pretrain};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let rounds = args.first().copied().unwrap_or(7);
    let per_round = args.get(1).copied().unwrap_or(5);

    let dir = std::env::temp_dir().join(format!("pglm-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let corpus = dir.join("corpus.txt");
    // A few hundred KB of varied text (a deterministic word salad).
    let words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "past", "quickly", "home"];
    let text: String = (0..60_000u64)
        .map(|i| words[((i * 2654435761) >> 7) as usize % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&corpus, &text)?;

    let (batch_size, seq_len) = (16, 64);
    let mut config = TrainConfig::sft(&corpus, GptConfig::new(0, seq_len, 4, 4, 128), seq_len);
    config.data.kind = DataKind::Text;
    config.batch.batch_size = batch_size;
    config.run.steps = u64::MAX / 2; // never reach the end: no evaluation, no checkpoint
    config.run.eval_every = 0;
    config.run.checkpoint_every = 0;
    let mut trainer = Trainer::<f32>::new(config.clone(), dir.join("run"))?;
    let cfg = trainer.config().model.clone();

    // The bare loop: the same model shape, one fixed batch.
    let seqs = pretrain::corpus_sequences(&text, &corpus, trainer.tokenizer(), seq_len)?;
    let refs: Vec<&Sequence> = seqs.iter().take(batch_size).collect();
    let batch = Batch::<f32>::new(&refs, 0);
    let mut model = Gpt::<f32>::new(cfg.clone(), 1)?;
    let mut opt = AdamW::<f32>::new(1e-3).with_betas(0.9, 0.95).with_weight_decay(0.1);
    let bare_step = |model: &mut Gpt<f32>, opt: &mut AdamW<f32>| {
        model.params.zero_grad();
        let mut tape = Tape::new();
        let loss = model.loss(&mut tape, &batch.ids, &batch.targets, None, None).unwrap();
        let grads = tape.backward(loss);
        drop(tape);
        grads.accumulate_into(&mut model.params);
        opt.step(&mut model.params, 1e-3);
    };

    // Warm up both.
    for _ in 0..2 {
        bare_step(&mut model, &mut opt);
        trainer.step()?;
    }
    let (mut bare, mut looped) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            bare_step(&mut model, &mut opt);
        }
        bare.push(t.elapsed().as_secs_f64() / per_round as f64);
        let t = Instant::now();
        for _ in 0..per_round {
            trainer.step()?;
        }
        looped.push(t.elapsed().as_secs_f64() / per_round as f64);
    }
    let (b, l) = (median(bare), median(looped));
    let tokens = (batch_size * seq_len) as f64;
    println!(
        "model: {} layers, n_embd {}, vocab {}, batch {batch_size} x {seq_len} tokens",
        cfg.n_layer, cfg.n_embd, cfg.vocab_size
    );
    println!("bare loss+backward+AdamW: {:.2} ms/step, {:.0} tokens/s", b * 1e3, tokens / b);
    println!("Trainer::step:            {:.2} ms/step, {:.0} tokens/s", l * 1e3, tokens / l);
    println!("overhead: {:+.2}% of the bare step time", 100.0 * (l - b) / b);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
