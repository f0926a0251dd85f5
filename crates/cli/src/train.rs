//! `pglm pretrain` and `pglm sft`: start a run from a config, or resume one, and drive it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pglm_trainer::{TrainConfig, Trainer};

use crate::config::{self, ConfigArgs};
use crate::drive::{self, Exit};
use crate::progress::{Output, fmt_num};

/// Arguments of `pglm pretrain` and `pglm sft`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The run directory (config, tokenizer, metrics.jsonl, checkpoints). Default: runs/<command>.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Continue the run in --run from its latest checkpoint (the run's own config is used).
    #[arg(long)]
    pub resume: bool,
}

/// Which of the two commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Next-token prediction on a text corpus.
    Pretrain,
    /// Prompt/completion pairs.
    Sft,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pretrain => "pretrain",
            Kind::Sft => "sft",
        }
    }

    /// The `data.kind` this command trains on.
    fn data_kind(self) -> &'static str {
        match self {
            Kind::Pretrain => "text",
            Kind::Sft => "sft",
        }
    }
}

/// Reads the config for `kind`: `data.kind` defaults to the command's.
pub fn load_config(kind: Kind, args: &ConfigArgs) -> Result<TrainConfig> {
    if args.config.is_none() && args.sets.is_empty() {
        bail!(
            "no configuration: give --config FILE (examples in configs/, keys in docs/CONFIG.md), \
             or continue a run with --run DIR --resume"
        );
    }
    let config: TrainConfig = config::load(args, &[("data.kind", toml::Value::from(kind.data_kind()))])?;
    let want = kind.data_kind();
    let got = serde_json::to_value(config.data.kind).expect("kinds serialize");
    if got != want {
        let other = if kind == Kind::Sft { "pretrain" } else { "sft" };
        bail!(
            "data.kind = {got} is for `pglm {other}`; `pglm {}` trains on data.kind = \"{want}\"",
            kind.name()
        );
    }
    config.validate()?;
    Ok(config)
}

/// Starts (or resumes) and drives a run; prints where everything is.
pub fn run(kind: Kind, args: &Args, out: &Output) -> Result<Exit> {
    // Before the (possibly slow) setup, so that an early Ctrl-C is not a hard kill.
    drive::install_interrupt_handler()?;
    let dir = args.run.clone().unwrap_or_else(|| PathBuf::from("runs").join(kind.name()));
    let mut trainer = if args.resume {
        if args.config.config.is_some() || !args.config.sets.is_empty() {
            bail!("--resume uses the run's saved config.json; drop --config/--set, or start a new --run DIR");
        }
        let t = Trainer::<f32>::resume(&dir)
            .with_context(|| format!("cannot resume the run in {}", dir.display()))?;
        out.note(format!("resuming {} at step {}/{}", dir.display(), t.steps_done(), t.config().run.steps));
        t
    } else {
        let config = load_config(kind, &args.config)?;
        if dir.join("config.json").exists() {
            bail!(
                "{} already holds a run: continue it with `pglm {} --run {} --resume`, or choose another --run DIR",
                dir.display(),
                kind.name(),
                dir.display()
            );
        }
        start(config, &dir, out)?
    };
    let driven = drive::drive(&mut trainer, kind.name(), out)?;
    summarize(kind, &trainer, &driven, out);
    Ok(driven.exit)
}

/// A new run in `dir`.
pub fn start(config: TrainConfig, dir: &Path, out: &Output) -> Result<Trainer<f32>> {
    let t = Trainer::<f32>::new(config, dir)
        .with_context(|| format!("cannot start a run in {}", dir.display()))?;
    let m = &t.config().model;
    let params: usize = t.model().params.iter().map(|(_, p)| p.value().len()).sum();
    out.note(format!(
        "run {}: {} layers x {} wide, {} heads, vocab {}, {:.2}M parameters, {} steps",
        dir.display(),
        m.n_layer,
        m.n_embd,
        m.n_head,
        m.vocab_size,
        params as f64 / 1e6,
        t.config().run.steps
    ));
    Ok(t)
}

fn summarize(kind: Kind, t: &Trainer<f32>, d: &drive::Driven<pglm_trainer::StepMetrics>, out: &Output) {
    let dir = t.run_dir().display();
    if d.exit == Exit::Interrupted {
        out.note(format!("continue with: pglm {} --run {dir} --resume", kind.name()));
        return;
    }
    let mut line = format!("done: {} steps", t.steps_done());
    if let Some(m) = &d.last {
        if let Some(l) = m.loss {
            line += &format!(", loss {}", fmt_num(l));
        }
        for (k, v) in
            [("eval_loss", m.eval_loss), ("eval_accuracy", m.eval_accuracy), ("eval_reward", m.eval_reward)]
        {
            if let Some(v) = v {
                line += &format!(", {k} {}", fmt_num(v));
            }
        }
    }
    out.note(line);
    out.note(format!("  run:        {dir}  (metrics.jsonl, config.json, tokenizer.json)"));
    if let Some(c) = &d.checkpoint {
        out.note(format!("  checkpoint: {}", c.display()));
    }
    out.note(format!("  next:       pglm sample --model {dir}   |   pglm plot {dir}"));
}
