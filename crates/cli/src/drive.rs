//! Driving a trainer: step until it is finished, showing progress, and on Ctrl-C save a checkpoint
//! and stop (a second Ctrl-C exits at once). Any trainer with `step`/`is_finished`/
//! `save_checkpoint` fits: implement [`Run`] for it and [`ShowMetrics`] for its step metrics.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use pglm_autograd::Float;
use pglm_trainer::{StepMetrics, Trainer};
use serde::Serialize;

use crate::progress::{Mode, Output, fmt_num, start_bar, with_bar_suspended};

/// Exit code after a Ctrl-C that saved a checkpoint (128 + SIGINT, the shell's convention).
pub const EXIT_INTERRUPTED: i32 = 130;

/// How a command ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what was asked.
    Done,
    /// Ctrl-C stopped it after a checkpoint was saved.
    Interrupted,
}

/// Ctrl-C presses so far.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler (once): the first press asks the running loop to stop at the end
/// of its step; the second exits at once.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    let mut result = Ok(());
    HANDLER.call_once(|| {
        result = ctrlc::set_handler(|| {
            if INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\ninterrupted again: exiting without saving");
                std::process::exit(EXIT_INTERRUPTED);
            }
            eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to exit at once)");
        });
    });
    result.context("cannot install the Ctrl-C handler")
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// The step metrics of a trainer, as the progress display needs them.
pub trait ShowMetrics: Serialize {
    /// The step these metrics are of (1-based).
    fn step(&self) -> u64;
    /// The few numbers the progress bar shows (name, value), most important first.
    fn headline(&self) -> Vec<(&'static str, f64)>;
    /// Evaluation results of this step, if it evaluated (printed as a log line of their own).
    fn evaluation(&self) -> Vec<(&'static str, f64)>;
}

/// A trainer the command line can drive.
pub trait Run {
    /// What one step reports.
    type Metrics: ShowMetrics;
    /// One optimizer step (with its evaluation and checkpoint when due).
    fn step(&mut self) -> anyhow::Result<Self::Metrics>;
    /// True once the budget is spent or the stop condition met.
    fn is_finished(&self) -> bool;
    /// Steps completed.
    fn steps_done(&self) -> u64;
    /// The step budget.
    fn total_steps(&self) -> u64;
    /// Writes a checkpoint of the current state.
    fn save_checkpoint(&mut self) -> anyhow::Result<PathBuf>;
    /// The newest checkpoint.
    fn last_checkpoint(&self) -> Option<PathBuf>;
}

impl<F: Float> Run for Trainer<F> {
    type Metrics = StepMetrics;
    fn step(&mut self) -> anyhow::Result<StepMetrics> {
        Ok(Trainer::step(self)?)
    }
    fn is_finished(&self) -> bool {
        Trainer::is_finished(self)
    }
    fn steps_done(&self) -> u64 {
        Trainer::steps_done(self)
    }
    fn total_steps(&self) -> u64 {
        self.config().run.steps
    }
    fn save_checkpoint(&mut self) -> anyhow::Result<PathBuf> {
        Ok(Trainer::save_checkpoint(self)?)
    }
    fn last_checkpoint(&self) -> Option<PathBuf> {
        Trainer::last_checkpoint(self).map(Path::to_path_buf)
    }
}

impl ShowMetrics for StepMetrics {
    fn step(&self) -> u64 {
        self.step
    }
    fn headline(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("loss", self.loss.unwrap_or(f64::NAN)), ("tok/s", self.tokens_per_sec)];
        if self.skipped {
            v.push(("skipped", 1.0));
        }
        v
    }
    fn evaluation(&self) -> Vec<(&'static str, f64)> {
        [
            ("eval_loss", self.eval_loss),
            ("eval_accuracy", self.eval_accuracy),
            ("eval_reward", self.eval_reward),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// What [`drive`] did.
#[derive(Debug)]
pub struct Driven<M> {
    /// Finished or interrupted.
    pub exit: Exit,
    /// The last step's metrics, if a step ran.
    pub last: Option<M>,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
}

fn pairs(v: &[(&str, f64)]) -> String {
    v.iter().map(|(k, x)| format!("{k} {}", fmt_num(*x))).collect::<Vec<_>>().join("  ")
}

/// Steps `run` until it is finished or Ctrl-C is pressed, showing progress as `out` says;
/// `label` names the phase (`sft`, `rl`, ...). On Ctrl-C it saves a checkpoint and returns
/// [`Exit::Interrupted`].
pub fn drive<R: Run>(run: &mut R, label: &str, out: &Output) -> anyhow::Result<Driven<R::Metrics>> {
    install_interrupt_handler()?;
    let total = run.total_steps();
    let bar = (out.mode == Mode::Bar).then(|| start_bar(label, run.steps_done(), total));
    // Plain mode: about 20 lines per run, plus every evaluation.
    let every = (total / 20).max(1);
    let mut last = None;
    let result = (|| -> anyhow::Result<Exit> {
        while !run.is_finished() {
            if interrupted() {
                return Ok(Exit::Interrupted);
            }
            let m = run.step()?;
            let (head, eval) = (m.headline(), m.evaluation());
            let step = m.step();
            match out.mode {
                Mode::Bar => {
                    let bar = bar.as_ref().expect("a bar in bar mode");
                    bar.set_position(step);
                    bar.set_message(pairs(&head));
                    if !eval.is_empty() {
                        bar.println(format!("{label} step {step}: {}", pairs(&eval)));
                    }
                }
                Mode::Plain | Mode::Quiet => {
                    let due = out.mode == Mode::Plain && (step % every == 0 || step == total);
                    if due || !eval.is_empty() {
                        let mut all = head.clone();
                        all.extend(eval.iter().copied());
                        with_bar_suspended(|| eprintln!("{label} step {step}/{total}  {}", pairs(&all)));
                    }
                }
                Mode::Json => {
                    let mut v = serde_json::to_value(&m).context("metrics to JSON")?;
                    v["phase"] = label.into();
                    println!("{v}");
                }
            }
            last = Some(m);
        }
        Ok(if interrupted() { Exit::Interrupted } else { Exit::Done })
    })();
    if let Some(b) = &bar {
        crate::progress::finish_bar(b);
    }
    let exit = result?;
    if exit == Exit::Interrupted {
        let path = run.save_checkpoint().context("saving the checkpoint after Ctrl-C")?;
        out.note(format!(
            "interrupted at step {}/{total}: checkpoint saved to {}",
            run.steps_done(),
            path.display()
        ));
    }
    Ok(Driven { exit, last, checkpoint: run.last_checkpoint() })
}
