//! Policy-gradient RL on a task dataset from a pretraining/SFT run, printing each step's reward and
//! each evaluation (the `pglm rl` command runs the same trainer from a TOML config).
//!
//! ```text
//! cargo run --release -p pglm-trainer --example rl -- --data data/addition --init runs/addition \
//!     --out runs/addition-grpo --preset grpo --steps 200 --lr 1e-4
//! ```
//!
//! The data directory must hold `train.jsonl` (prompts), `test.jsonl` (held-out accuracy) and
//! `task.json` (the task's name and settings). If the run directory already holds a run, it is
//! resumed.

use std::path::PathBuf;

use pglm_trainer::rl::{AlgorithmConfig, RlConfig, RlTrainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut data = PathBuf::from("data/addition");
    let mut init = PathBuf::from("runs/addition");
    let mut out = PathBuf::from("runs/addition-rl");
    let mut preset = "grpo".to_string();
    let mut sets: Vec<(String, f64)> = Vec::new();
    for pair in argv.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair.get(1).cloned().unwrap_or_default());
        match flag {
            "--data" => data = value.into(),
            "--init" => init = value.into(),
            "--out" => out = value.into(),
            "--preset" => preset = value,
            other => {
                let key = other.trim_start_matches("--").to_string();
                let v = value.parse::<f64>().map_err(|_| format!("{other} needs a number, got {value:?}"))?;
                sets.push((key, v));
            }
        }
    }
    let mut trainer = if out.join("config.json").exists() {
        RlTrainer::<f32>::resume(&out)?
    } else {
        let task: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("task.json"))?)?;
        let name = task["task"].as_str().ok_or("task.json has no task name")?;
        let mut c = RlConfig::new(&init, name, data.join("train.jsonl"));
        c.task.settings = task["config"].clone();
        c.task.test = Some(data.join("test.jsonl"));
        c.algorithm = AlgorithmConfig::preset(&preset).ok_or_else(|| format!("unknown preset {preset}"))?;
        for (key, v) in &sets {
            match key.as_str() {
                "steps" => c.run.steps = *v as u64,
                "seed" => c.run.seed = *v as u64,
                "lr" => {
                    c.optim.lr = *v;
                    c.optim.min_lr = *v;
                }
                "warmup" => c.optim.warmup_steps = *v as u64,
                "prompts" => c.rollout.prompts_per_step = *v as usize,
                "group" => c.rollout.group_size = *v as usize,
                "max-new" => c.rollout.max_new_tokens = *v as usize,
                "temperature" => c.rollout.temperature = *v as f32,
                "eval-every" => c.run.eval_every = *v as u64,
                "examples" => c.task.eval_examples = *v as usize,
                "kl" => c.kl.coef = *v,
                "epochs" => c.update.epochs = *v as usize,
                "mini-batches" => c.update.mini_batches = *v as usize,
                "entropy" => c.algorithm.entropy_coef = *v,
                "value-coef" => c.algorithm.value_coef = *v,
                "critic-warmup" => c.algorithm.critic_warmup = *v as u64,
                "dynamic" => c.filter.dynamic_sampling = *v != 0.0,
                other => return Err(format!("unknown flag --{other}").into()),
            }
        }
        RlTrainer::<f32>::new(c, &out)?
    };
    while !trainer.is_finished() {
        let m = trainer.step()?;
        let eval = m.eval_accuracy.map(|a| format!("  eval_accuracy {:.3}", a)).unwrap_or_default();
        println!(
            "step {:4}  reward {:.3}  zero-std {:.2}  entropy {:.3}  len {:.1}  {:.2}s (gen {:.2}){eval}",
            m.step,
            m.reward_mean.unwrap_or(f64::NAN),
            m.frac_reward_zero_std,
            m.entropy.unwrap_or(f64::NAN),
            m.completion_len_mean,
            m.time_gen_s + m.time_score_s + m.time_logprobs_s + m.time_update_s,
            m.time_gen_s,
        );
    }
    let score = trainer.evaluate()?;
    println!("final: {score:?}\nrun directory: {}", trainer.run_dir().display());
    Ok(())
}
