//! `pglm quickstart`: the whole pipeline on the countdown task (TinyZero's: reach a target with
//! three numbers and + - * /), with an embedded configuration and no downloads. A sequence of
//! phases, each a function: data, SFT on the answer format only, evaluation, RL (GRPO),
//! evaluation, plots, and a before/after table. Running it again in the same `--out` resumes an
//! interrupted phase and reuses finished ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use pglm_rewards::dataset::DataSpec;
use pglm_trainer::rl::{RlConfig, RlTrainer};
use pglm_trainer::{TrainConfig, Trainer};
use serde_json::json;

use crate::drive::{self, Exit};
use crate::eval::{self, EvalReport};
use crate::load::load_model;
use crate::plot::{self, Format};
use crate::progress::{Output, fmt_num};

/// The embedded SFT configuration (data paths are filled in below).
const SFT_CONFIG: &str = include_str!("quickstart_sft.toml");
/// The embedded RL configuration (paths are filled in below).
const RL_CONFIG: &str = include_str!("quickstart_rl.toml");

/// Arguments of `pglm quickstart`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the data, runs, plots and summary go (an existing quickstart there is resumed).
    #[arg(long, value_name = "DIR", default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// A tiny version (seconds, not minutes): for tests and a first look; accuracy stays low.
    #[arg(long)]
    pub quick: bool,
}

/// The quickstart's sizes.
struct Plan {
    out: PathBuf,
    quick: bool,
    n_train: usize,
    n_test: usize,
    eval_prompts: usize,
    k: usize,
}

impl Plan {
    fn new(a: &Args) -> Self {
        let (n_train, n_test, eval_prompts, k) = if a.quick { (200, 20, 20, 2) } else { (4000, 200, 200, 4) };
        Plan { out: a.out.clone(), quick: a.quick, n_train, n_test, eval_prompts, k }
    }
    fn data_dir(&self) -> PathBuf {
        self.out.join("data")
    }
    fn sft_dir(&self) -> PathBuf {
        self.out.join("sft")
    }
    fn rl_dir(&self) -> PathBuf {
        self.out.join("rl")
    }
    fn plots_dir(&self) -> PathBuf {
        self.out.join("plots")
    }
}

/// Phase 1: the countdown dataset with three numbers, as `pglm data countdown --format-sft`
/// writes it (its `sft_format.jsonl` teaches the format without the solutions). The task and its
/// settings are the RL config's, so that data, training and evaluation agree.
fn phase_data(p: &Plan, rl: &RlConfig, out: &Output) -> Result<()> {
    out.note(format!(
        "[1] data: {} {}, {} train / {} test examples -> {}",
        rl.task.name,
        rl.task.settings,
        p.n_train,
        p.n_test,
        p.data_dir().display()
    ));
    let spec = DataSpec { seed: 0, n_train: p.n_train, n_test: p.n_test, format_sft: true };
    crate::data::generate(&rl.task.name, &spec, &rl.task.settings, &p.data_dir())?;
    Ok(())
}

/// The SFT config: the embedded one, pointed at the generated data.
fn sft_config(p: &Plan) -> Result<TrainConfig> {
    let mut table: toml::Table = toml::from_str(SFT_CONFIG).context("the embedded quickstart config")?;
    let path = |f: &str| toml::Value::from(p.data_dir().join(f).to_string_lossy().into_owned());
    let data = table["data"].as_table_mut().expect("a [data] table");
    data.insert("train".into(), path("sft_format.jsonl"));
    let task = data["task"].as_table_mut().expect("a [data.task] table");
    task.insert("test".into(), path("test.jsonl"));
    task.insert("examples".into(), toml::Value::from(p.eval_prompts as i64));
    if p.quick {
        let run = table["run"].as_table_mut().expect("a [run] table");
        run.insert("steps".into(), toml::Value::from(6));
        run.insert("eval_every".into(), toml::Value::from(3));
        run.insert("checkpoint_every".into(), toml::Value::from(3));
        let optim = table["optim"].as_table_mut().expect("an [optim] table");
        optim.insert("warmup_steps".into(), toml::Value::from(2));
    }
    let config: TrainConfig =
        toml::Value::Table(table).try_into().context("the embedded quickstart config")?;
    config.validate()?;
    Ok(config)
}

/// Phase 2: supervised fine-tuning (resumed if a previous quickstart was interrupted).
fn phase_sft(p: &Plan, out: &Output) -> Result<Exit> {
    let dir = p.sft_dir();
    let mut trainer = if dir.join("config.json").exists() {
        Trainer::<f32>::resume(&dir).with_context(|| format!("cannot resume {}", dir.display()))?
    } else {
        let config = sft_config(p)?;
        out.note(format!("[2] SFT: {} steps -> {}", config.run.steps, dir.display()));
        crate::train::start(config, &dir, out)?
    };
    let driven = drive::drive(&mut trainer, "sft", out)?;
    Ok(driven.exit)
}

/// The RL config: the embedded one, starting from the SFT run, on the generated prompts.
fn rl_config(p: &Plan) -> Result<RlConfig> {
    let mut table: toml::Table = toml::from_str(RL_CONFIG).context("the embedded quickstart RL config")?;
    let path = |f: &Path| toml::Value::from(f.to_string_lossy().into_owned());
    let policy = table["policy"].as_table_mut().expect("a [policy] table");
    policy.insert("init".into(), path(&p.sft_dir()));
    let task = table["task"].as_table_mut().expect("a [task] table");
    task.insert("train".into(), path(&p.data_dir().join("train.jsonl")));
    task.insert("test".into(), path(&p.data_dir().join("test.jsonl")));
    task.insert("eval_examples".into(), toml::Value::from(p.eval_prompts as i64));
    if p.quick {
        let run = table["run"].as_table_mut().expect("a [run] table");
        run.insert("steps".into(), toml::Value::from(4));
        run.insert("eval_every".into(), toml::Value::from(2));
        run.insert("checkpoint_every".into(), toml::Value::from(2));
        let rollout = table["rollout"].as_table_mut().expect("a [rollout] table");
        rollout.insert("prompts_per_step".into(), toml::Value::from(4));
        rollout.insert("group_size".into(), toml::Value::from(4));
    }
    let config: RlConfig =
        toml::Value::Table(table).try_into().context("the embedded quickstart RL config")?;
    config.validate()?;
    Ok(config)
}

/// Phase 4: GRPO from the SFT model (resumed if a previous quickstart was interrupted).
fn phase_rl(p: &Plan, config: &RlConfig, out: &Output) -> Result<Exit> {
    let dir = p.rl_dir();
    let mut trainer = if dir.join("config.json").exists() {
        RlTrainer::<f32>::resume(&dir).with_context(|| format!("cannot resume {}", dir.display()))?
    } else {
        out.note(format!("[4] RL (GRPO): {} steps -> {}", config.run.steps, dir.display()));
        crate::rl::start(config.clone(), &dir, out)?
    };
    let driven = drive::drive(&mut trainer, "rl", out)?;
    Ok(driven.exit)
}

/// Phase 3 (and 5): greedy accuracy, mean reward and pass@k on the test set, decoded with the RL
/// run's task and completion length.
fn phase_eval(p: &Plan, rl: &RlConfig, label: &str, model: &Path, out: &Output) -> Result<EvalReport> {
    out.note(format!("[eval] {label}: {} test prompts, pass@{}", p.eval_prompts, p.k));
    let args = eval::Args {
        model: model.to_path_buf(),
        data: p.data_dir().join("test.jsonl"),
        task: Some(rl.task.name.clone()),
        tokenizer: None,
        k: p.k,
        temperature: 1.0,
        max_new_tokens: rl.rollout.max_new_tokens,
        limit: Some(p.eval_prompts),
        seed: 0,
        out: None,
    };
    let report = eval::evaluate(&load_model(model, None)?, &args)?;
    eval::write_report(&model.join("eval.json"), &report)?;
    Ok(report)
}

/// Phase 6: charts of every run's metrics.
fn phase_plots(p: &Plan, runs: &[PathBuf], out: &Output) -> Result<Vec<PathBuf>> {
    out.note(format!("[plots] -> {}", p.plots_dir().display()));
    plot::plot(runs, &p.plots_dir(), Format::Svg)
}

/// The before/after table.
fn table(rows: &[(&str, &EvalReport)], k: usize) -> String {
    let mut s =
        format!("\n{:<12} {:>9} {:>12} {:>8}\n", "model", "accuracy", "mean reward", format!("pass@{k}"));
    for (name, r) in rows {
        let pass = r.pass_at_k.map_or("-".to_string(), fmt_num);
        s += &format!("{name:<12} {:>9} {:>12} {:>8}\n", fmt_num(r.accuracy), fmt_num(r.mean_reward), pass);
    }
    s
}

pub fn run(args: &Args, out: &Output) -> Result<Exit> {
    drive::install_interrupt_handler()?;
    let started = Instant::now();
    let p = Plan::new(args);
    let rl = rl_config(&p)?;
    phase_data(&p, &rl, out)?;
    if phase_sft(&p, out)? == Exit::Interrupted {
        out.note(format!("run `pglm quickstart --out {}` again to continue", p.out.display()));
        return Ok(Exit::Interrupted);
    }
    let after_sft = phase_eval(&p, &rl, "after SFT", &p.sft_dir(), out)?;
    if phase_rl(&p, &rl, out)? == Exit::Interrupted {
        out.note(format!("run `pglm quickstart --out {}` again to continue", p.out.display()));
        return Ok(Exit::Interrupted);
    }
    let after_rl = phase_eval(&p, &rl, "after RL", &p.rl_dir(), out)?;
    let rows: Vec<(&str, &EvalReport)> = vec![("after SFT", &after_sft), ("after RL", &after_rl)];
    let runs = vec![p.sft_dir(), p.rl_dir()];
    let plots = phase_plots(&p, &runs, out)?;

    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "seconds": seconds,
        "quick": p.quick,
        "results": rows.iter().map(|(n, r)| json!({"model": n, "eval": r})).collect::<Vec<_>>(),
        "plots": plots,
    });
    let summary_path = p.out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).expect("JSON") + "\n";
    pglm_trainer::run_dir::write_atomically(&summary_path, text.as_bytes())?;
    if out.json() {
        println!("{summary}");
    } else {
        print!("{}", table(&rows, p.k));
        println!("\nfiles ({:.0} s):", seconds);
        println!("  data     {}", p.data_dir().display());
        println!("  SFT run  {}  (metrics.jsonl, checkpoints/, eval.json)", p.sft_dir().display());
        println!("  RL run   {}  (metrics.jsonl, completions.jsonl, eval.json)", p.rl_dir().display());
        println!("  plots    {}", p.plots_dir().display());
        println!("  summary  {}", summary_path.display());
        println!(
            "\ntry: pglm sample --model {} --prompt \"Make 90 from 13 35 42:\" -t 0",
            p.rl_dir().display()
        );
    }
    Ok(Exit::Done)
}
