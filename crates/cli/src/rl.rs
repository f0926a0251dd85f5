//! `pglm rl`: policy-gradient RL from a pretraining/SFT run, from a config (examples:
//! `configs/rl-*.toml`), or resume one; driven like `pglm sft` (progress, Ctrl-C saves).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pglm_trainer::rl::{RlConfig, RlStepMetrics, RlTrainer};

use crate::config::{self, ConfigArgs};
use crate::drive::{self, Exit, Run, ShowMetrics};
use crate::progress::{Output, fmt_num};

/// Arguments of `pglm rl`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The run directory (config, tokenizer, metrics.jsonl, completions.jsonl, checkpoints).
    /// Default: runs/rl.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Continue the run in --run from its latest checkpoint (the run's own config is used).
    #[arg(long)]
    pub resume: bool,
}

/// Reads and checks an RL config.
pub fn load_config(args: &ConfigArgs) -> Result<RlConfig> {
    if args.config.is_none() && args.sets.is_empty() {
        bail!(
            "no configuration: give --config FILE (examples in configs/rl-*.toml, keys in docs/CONFIG.md), \
             or continue a run with --run DIR --resume"
        );
    }
    let config: RlConfig = config::load(args, &[])?;
    config.validate()?;
    Ok(config)
}

/// Starts (or resumes) and drives an RL run; prints where everything is.
pub fn run(args: &Args, out: &Output) -> Result<Exit> {
    drive::install_interrupt_handler()?;
    let dir = args.run.clone().unwrap_or_else(|| PathBuf::from("runs/rl"));
    let mut trainer = if args.resume {
        if args.config.config.is_some() || !args.config.sets.is_empty() {
            bail!("--resume uses the run's saved config.json; drop --config/--set, or start a new --run DIR");
        }
        let t = RlTrainer::<f32>::resume(&dir)
            .with_context(|| format!("cannot resume the run in {}", dir.display()))?;
        out.note(format!("resuming {} at step {}/{}", dir.display(), t.steps_done(), t.config().run.steps));
        t
    } else {
        let config = load_config(&args.config)?;
        if dir.join("config.json").exists() {
            bail!(
                "{} already holds a run: continue it with `pglm rl --run {} --resume`, or choose another --run DIR",
                dir.display(),
                dir.display()
            );
        }
        start(config, &dir, out)?
    };
    let driven = drive::drive(&mut trainer, "rl", out)?;
    let d = trainer.run_dir().display();
    if driven.exit == Exit::Interrupted {
        out.note(format!("continue with: pglm rl --run {d} --resume"));
        return Ok(driven.exit);
    }
    let mut line = format!("done: {} steps", trainer.steps_done());
    if let Some(m) = &driven.last {
        for (k, v) in [("reward_mean", m.reward_mean), ("eval_accuracy", m.eval_accuracy)] {
            if let Some(v) = v {
                line += &format!(", {k} {}", fmt_num(v));
            }
        }
    }
    out.note(line);
    out.note(format!("  run:        {d}  (metrics.jsonl, completions.jsonl, config.json)"));
    if let Some(c) = &driven.checkpoint {
        out.note(format!("  checkpoint: {}", c.display()));
    }
    out.note(format!("  next:       pglm sample --model {d}   |   pglm plot {d}"));
    Ok(driven.exit)
}

/// A new RL run in `dir`.
pub fn start(config: RlConfig, dir: &Path, out: &Output) -> Result<RlTrainer<f32>> {
    let t = RlTrainer::<f32>::new(config, dir)
        .with_context(|| format!("cannot start an RL run in {}", dir.display()))?;
    let c = t.config();
    out.note(format!(
        "run {}: {:?} from {}, {} prompts x {} completions per step, {} steps",
        dir.display(),
        c.algorithm.estimator,
        c.policy.init.display(),
        c.rollout.prompts_per_step,
        c.rollout.group_size,
        c.run.steps
    ));
    Ok(t)
}

impl Run for RlTrainer<f32> {
    type Metrics = RlStepMetrics;
    fn step(&mut self) -> Result<RlStepMetrics> {
        Ok(RlTrainer::step(self)?)
    }
    fn is_finished(&self) -> bool {
        RlTrainer::is_finished(self)
    }
    fn steps_done(&self) -> u64 {
        RlTrainer::steps_done(self)
    }
    fn total_steps(&self) -> u64 {
        self.config().run.steps
    }
    fn save_checkpoint(&mut self) -> Result<PathBuf> {
        Ok(RlTrainer::save_checkpoint(self)?)
    }
    fn last_checkpoint(&self) -> Option<PathBuf> {
        RlTrainer::last_checkpoint(self).map(Path::to_path_buf)
    }
}

impl ShowMetrics for RlStepMetrics {
    fn step(&self) -> u64 {
        self.step
    }
    fn headline(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("reward", self.reward_mean.unwrap_or(f64::NAN))];
        if let Some(kl) = self.kl {
            v.push(("kl", kl));
        }
        v.push(("entropy", self.entropy.unwrap_or(f64::NAN)));
        v.push(("loss", self.policy_loss.unwrap_or(f64::NAN)));
        v.push(("tok/s", self.tokens_per_sec));
        v
    }
    fn evaluation(&self) -> Vec<(&'static str, f64)> {
        [("eval_accuracy", self.eval_accuracy), ("eval_reward", self.eval_reward)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}
