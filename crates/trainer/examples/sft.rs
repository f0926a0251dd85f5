//! Supervised fine-tuning on a task dataset written by `cargo xtask data`, printing the
//! evaluations as they come (until the CLI exists, this is how to run one).
//!
//! ```text
//! cargo xtask data addition --n 20000 --test-n 500 --seed 1 --out data/addition
//! cargo run --release -p pglm-trainer --example sft -- --data data/addition --out runs/addition \
//!     --steps 3000 --layers 2 --width 128 --heads 4 --batch 64 --lr 3e-3
//! ```
//!
//! The data directory must hold `sft.jsonl` (training pairs), `test.jsonl` (task accuracy) and
//! `task.json` (the task's name and settings); `--sft-file` picks another SFT file of the directory
//! (countdown's `sft_format.jsonl`). Held-out loss uses the last `--holdout` SFT pairs.
//! If the run directory already holds a run, it is resumed.

use std::path::PathBuf;

use pglm_model::GptConfig;
use pglm_trainer::{TaskEvalConfig, TrainConfig, Trainer};

struct Args {
    data: PathBuf,
    sft_file: String,
    out: PathBuf,
    steps: u64,
    layers: usize,
    width: usize,
    heads: usize,
    context: usize,
    batch: usize,
    micro: Option<usize>,
    lr: f64,
    warmup: u64,
    eval_every: u64,
    holdout: usize,
    examples: usize,
    seed: u64,
}

fn parse() -> Args {
    let mut a = Args {
        data: PathBuf::from("data/addition"),
        sft_file: "sft.jsonl".into(),
        out: PathBuf::from("runs/addition"),
        steps: 3000,
        layers: 2,
        width: 128,
        heads: 4,
        context: 32,
        batch: 64,
        micro: None,
        lr: 3e-3,
        warmup: 100,
        eval_every: 250,
        holdout: 512,
        examples: 500,
        seed: 1337,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair.get(1).map(String::as_str).unwrap_or(""));
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| panic!("{flag} needs a number, got {v:?}"));
        match flag {
            "--data" => a.data = value.into(),
            "--sft-file" => a.sft_file = value.into(),
            "--out" => a.out = value.into(),
            "--steps" => a.steps = num(value) as u64,
            "--layers" => a.layers = num(value) as usize,
            "--width" => a.width = num(value) as usize,
            "--heads" => a.heads = num(value) as usize,
            "--context" => a.context = num(value) as usize,
            "--batch" => a.batch = num(value) as usize,
            "--micro" => a.micro = Some(num(value) as usize),
            "--lr" => a.lr = num(value),
            "--warmup" => a.warmup = num(value) as u64,
            "--eval-every" => a.eval_every = num(value) as u64,
            "--holdout" => a.holdout = num(value) as usize,
            "--examples" => a.examples = num(value) as usize,
            "--seed" => a.seed = num(value) as u64,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let a = parse();
    let mut trainer = if a.out.join("config.json").exists() {
        println!("resuming {}", a.out.display());
        Trainer::<f32>::resume(&a.out)?
    } else {
        let task: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.data.join("task.json"))?)?;
        let model = GptConfig::new(0, a.context, a.layers, a.heads, a.width);
        let mut c = TrainConfig::sft(a.data.join(&a.sft_file), model, a.context);
        c.data.holdout = a.holdout;
        c.data.task = Some(TaskEvalConfig {
            name: task["task"].as_str().ok_or("task.json has no `task`")?.into(),
            settings: task["config"].clone(),
            test: a.data.join("test.jsonl"),
            examples: a.examples,
            max_new_tokens: 16,
        });
        c.batch.batch_size = a.batch;
        c.batch.micro_batch_size = a.micro;
        c.optim.lr = a.lr;
        c.optim.min_lr = a.lr / 10.0;
        c.optim.warmup_steps = a.warmup;
        c.run.steps = a.steps;
        c.run.eval_every = a.eval_every;
        c.run.eval_batches = a.holdout.div_ceil(a.batch).max(1);
        c.run.checkpoint_every = a.eval_every;
        c.run.seed = a.seed;
        Trainer::<f32>::new(c, &a.out)?
    };
    let model = trainer.config().model.clone();
    println!(
        "model: {} layers, n_embd {}, {} heads, vocab {}, {} parameters",
        model.n_layer,
        model.n_embd,
        model.n_head,
        model.vocab_size,
        trainer.model().params.numel()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "step", "loss", "eval_loss", "accuracy", "tok/s", "elapsed_s"
    );
    let steps = trainer.config().run.steps;
    while trainer.steps_done() < steps {
        let m = trainer.step()?;
        if m.eval_loss.is_some() || m.step == 1 {
            let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "{:>6} {:>10} {:>10} {:>10} {:>9.0} {:>10.1}",
                m.step,
                f(m.loss),
                f(m.eval_loss),
                f(m.eval_accuracy),
                m.tokens_per_sec,
                m.elapsed_s
            );
        }
    }
    println!("metrics: {}", a.out.join("metrics.jsonl").display());
    Ok(())
}
