//! `pglm`: the command line of pglm. One module per command; `drive` runs any trainer with a
//! progress display, Ctrl-C handling and resume, `config` turns TOML files plus `--set`
//! overrides into the trainer's config with errors that suggest the nearest valid key.
//!
//! Exit codes: 0 success, 1 an error (one line `error: ...` on stderr), 2 bad command-line
//! arguments (clap's usage message), 130 interrupted by Ctrl-C after saving a checkpoint.

mod config;
mod data;
mod drive;
mod eval;
mod hf;
mod load;
mod plot;
mod progress;
mod quickstart;
mod rl;
mod sample;
mod suggest;
mod tokenizer;
mod train;

use clap::{Parser, Subcommand};

/// Policy-gradient RL for small GPT-style language models, on the CPU.
#[derive(Debug, Parser)]
#[command(
    name = "pglm",
    version,
    after_help = "Start with `pglm quickstart`: data, SFT, evaluation and plots in a few minutes.\n\
                  Reference: docs/CLI.md; configuration keys: docs/CONFIG.md."
)]
struct Cli {
    #[command(flatten)]
    output: progress::OutputArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a built-in task's dataset (train/test/SFT JSON lines).
    Data(data::Args),
    /// Train a tokenizer on a corpus.
    #[command(subcommand)]
    Tokenizer(tokenizer::Command),
    /// Pretrain a model on a text corpus (next-token prediction).
    Pretrain(train::Args),
    /// Supervised fine-tuning on prompt/completion pairs.
    Sft(train::Args),
    /// Improve a model with policy-gradient RL (REINFORCE, RLOO, GRPO, PPO, ...) against a task's reward.
    Rl(rl::Args),
    /// Generate completions from a model: interactively, or for a file of prompts.
    Sample(sample::Args),
    /// Accuracy, mean reward and pass@k of a model on a task's test set.
    Eval(eval::Args),
    /// Convert a Hugging Face GPT-2 directory into a pglm model file.
    ImportHf(hf::ImportArgs),
    /// Write a pglm model as a Hugging Face GPT-2 directory.
    ExportHf(hf::ExportArgs),
    /// Draw the curves of runs' metrics.jsonl as SVG or PNG charts.
    Plot(plot::Args),
    /// Inspect configurations.
    #[command(subcommand)]
    Config(config::Command),
    /// Run the whole pipeline end to end on a built-in task, with no downloads.
    Quickstart(quickstart::Args),
}

fn run(cli: Cli) -> anyhow::Result<drive::Exit> {
    let out = cli.output.resolve();
    match cli.command {
        Command::Data(a) => data::run(&a, &out).map(|_| drive::Exit::Done),
        Command::Tokenizer(c) => tokenizer::run(&c, &out).map(|_| drive::Exit::Done),
        Command::Pretrain(a) => train::run(train::Kind::Pretrain, &a, &out),
        Command::Sft(a) => train::run(train::Kind::Sft, &a, &out),
        Command::Rl(a) => rl::run(&a, &out),
        Command::Sample(a) => sample::run(&a, &out).map(|_| drive::Exit::Done),
        Command::Eval(a) => eval::run(&a, &out).map(|_| drive::Exit::Done),
        Command::ImportHf(a) => hf::import(&a, &out).map(|_| drive::Exit::Done),
        Command::ExportHf(a) => hf::export(&a, &out).map(|_| drive::Exit::Done),
        Command::Plot(a) => plot::run(&a, &out).map(|_| drive::Exit::Done),
        Command::Config(c) => config::run(&c).map(|_| drive::Exit::Done),
        Command::Quickstart(a) => quickstart::run(&a, &out),
    }
}

fn main() {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(drive::Exit::Done) => 0,
        Ok(drive::Exit::Interrupted) => drive::EXIT_INTERRUPTED,
        Err(e) => {
            progress::clear_bars();
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
