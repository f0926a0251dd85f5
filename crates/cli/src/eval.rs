//! `pglm eval`: a model on a task's test set. Greedy decoding gives the accuracy (the share of
//! completions scoring at least 1, as the trainer's evaluation counts it) and the mean reward;
//! k samples per prompt at `--temperature` give pass@k (some sample correct) and the samples' mean
//! reward. Printed as a table and written as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pglm_rewards::dataset::read_dataset;
use pglm_rewards::{Reward, RewardInput, Score};
use pglm_sampler::{Completion, Sampler, SamplingParams};
use serde::Serialize;
use serde_json::Value;

use crate::load::{Loaded, load_model};
use crate::progress::{Output, fmt_num};
use crate::sample::encode;

/// Arguments of `pglm eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A run directory, a checkpoint or a model file.
    #[arg(short, long, value_name = "PATH")]
    pub model: PathBuf,
    /// The test set (JSON lines: `prompt` plus the reference fields), such as data/addition/test.jsonl.
    #[arg(short, long, value_name = "FILE")]
    pub data: PathBuf,
    /// The task (its reward scores the completions). Default: from task.json beside the data.
    #[arg(long)]
    pub task: Option<String>,
    /// The tokenizer (JSON), when the model does not carry one.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Samples per prompt for pass@k (0: greedy only).
    #[arg(short, long, default_value_t = 8)]
    pub k: usize,
    /// Temperature of the k samples.
    #[arg(short, long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Longest completion, in tokens.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Evaluate only the first N prompts.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the JSON results. Default: eval.json in the run directory, else here.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The results of an evaluation (the JSON file's content).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: PathBuf,
    /// The test file.
    pub data: PathBuf,
    /// The task.
    pub task: String,
    /// Prompts evaluated.
    pub prompts: usize,
    /// Greedy decoding: share of completions scoring at least 1.
    pub accuracy: f64,
    /// Greedy decoding: mean reward of the scorable completions.
    pub mean_reward: f64,
    /// Samples per prompt (k).
    pub k: usize,
    /// Temperature of the samples.
    pub temperature: f32,
    /// Share of prompts with at least one correct sample among k (absent when k = 0).
    pub pass_at_k: Option<f64>,
    /// Share of correct samples (an estimate of pass@1 at this temperature).
    pub sample_accuracy: Option<f64>,
    /// Mean reward of the samples.
    pub sample_mean_reward: Option<f64>,
    /// Mean completion length (greedy), in tokens.
    pub mean_length: f64,
}

/// The task name and settings: `--task`, else `task.json` beside the data file.
fn task_for(data: &Path, task: Option<&str>) -> Result<(String, Value)> {
    let meta_path = data.parent().unwrap_or(Path::new(".")).join("task.json");
    let meta: Option<Value> =
        std::fs::read_to_string(&meta_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let from_meta = meta.as_ref().and_then(|m| m["task"].as_str().map(str::to_string));
    match (task, from_meta) {
        (Some(t), Some(m)) if t == m => Ok((m, meta.expect("read above")["config"].clone())),
        (Some(t), _) => Ok((t.to_string(), Value::Null)),
        (None, Some(m)) => Ok((m, meta.expect("read above")["config"].clone())),
        (None, None) => bail!(
            "which task is {}? give --task NAME (no task.json beside it, as `pglm data` writes)",
            data.display()
        ),
    }
}

/// One completion's verdict: (correct, its reward when scorable).
type Verdict = (bool, Option<f64>);

/// Scores every completion of every record's group.
fn score(
    reward: &dyn Reward,
    records: &[pglm_rewards::dataset::Record],
    groups: &[Vec<Completion>],
) -> Result<Vec<Vec<Verdict>>> {
    let mut out = Vec::with_capacity(groups.len());
    for (r, group) in records.iter().zip(groups) {
        let inputs: Vec<RewardInput<'_>> = group
            .iter()
            .map(|c| RewardInput::new(&r.prompt, &c.text, &r.reference).with_len(c.tokens.len()))
            .collect();
        let mut row = Vec::with_capacity(group.len());
        for s in reward.score_batch(&inputs) {
            let s = s.with_context(|| format!("scoring the completion of {:?}", r.prompt))?;
            row.push(match s.total {
                Score::Value(v) => (v >= 1.0, Some(v)),
                _ => (false, None),
            });
        }
        out.push(row);
    }
    Ok(out)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// Evaluates `loaded` on `data`.
pub fn evaluate(loaded: &Loaded, args: &Args) -> Result<EvalReport> {
    let (task_name, settings) = task_for(&args.data, args.task.as_deref())?;
    let task = pglm_rewards::builtin_task(&task_name, &settings)?;
    let reward = task.reward();
    let mut records = read_dataset(&args.data, reward.as_ref())?;
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    let prompts: Vec<Vec<u32>> =
        records.iter().map(|r| encode(&loaded.tokenizer, &r.prompt)).collect::<Result<_>>()?;
    let mut sampler = Sampler::<f32>::new(loaded.model.config(), 64);
    let base =
        SamplingParams { max_new_tokens: args.max_new_tokens, seed: args.seed, ..SamplingParams::default() };

    let greedy = SamplingParams { n: 1, temperature: 0.0, ..base.clone() };
    let groups = sampler.generate(&loaded.model, &prompts, &greedy, &loaded.tokenizer)?;
    let g = score(reward.as_ref(), &records, &groups)?;
    let accuracy = mean(g.iter().map(|row| f64::from(u8::from(row[0].0))));
    let mean_reward = mean(g.iter().filter_map(|row| row[0].1));
    let mean_length = mean(groups.iter().map(|gr| gr[0].tokens.len() as f64));

    let (mut pass_at_k, mut sample_accuracy, mut sample_mean_reward) = (None, None, None);
    if args.k > 0 {
        let sampled = SamplingParams { n: args.k, temperature: args.temperature, ..base };
        let groups = sampler.generate(&loaded.model, &prompts, &sampled, &loaded.tokenizer)?;
        let s = score(reward.as_ref(), &records, &groups)?;
        pass_at_k = Some(mean(s.iter().map(|row| f64::from(u8::from(row.iter().any(|x| x.0))))));
        sample_accuracy = Some(mean(s.iter().flatten().map(|x| f64::from(u8::from(x.0)))));
        sample_mean_reward = Some(mean(s.iter().flatten().filter_map(|x| x.1)));
    }
    Ok(EvalReport {
        model: args.model.clone(),
        data: args.data.clone(),
        task: task_name,
        prompts: records.len(),
        accuracy,
        mean_reward,
        k: args.k,
        temperature: args.temperature,
        pass_at_k,
        sample_accuracy,
        sample_mean_reward,
        mean_length,
    })
}

/// The report as a small table.
pub fn table(r: &EvalReport) -> String {
    let mut rows = vec![
        ("prompts".to_string(), r.prompts.to_string()),
        ("accuracy (greedy)".into(), fmt_num(r.accuracy)),
        ("mean reward (greedy)".into(), fmt_num(r.mean_reward)),
        ("mean length (tokens)".into(), fmt_num(r.mean_length)),
    ];
    if let (Some(p), Some(a), Some(m)) = (r.pass_at_k, r.sample_accuracy, r.sample_mean_reward) {
        rows.push((format!("pass@{} (T = {})", r.k, r.temperature), fmt_num(p)));
        rows.push((format!("sample accuracy (T = {})", r.temperature), fmt_num(a)));
        rows.push((format!("sample mean reward (T = {})", r.temperature), fmt_num(m)));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = format!("{} on {} ({})\n", r.model.display(), r.data.display(), r.task);
    for (k, v) in rows {
        s += &format!("  {k:<w$}  {v:>8}\n");
    }
    s
}

/// Writes `report` as pretty JSON, atomically (a reader never sees half a file).
pub fn write_report(path: &Path, report: &EvalReport) -> Result<()> {
    let json = serde_json::to_string_pretty(report).expect("reports serialize") + "\n";
    Ok(pglm_trainer::run_dir::write_atomically(path, json.as_bytes())?)
}

pub fn run(args: &Args, out: &Output) -> Result<()> {
    let loaded = load_model(&args.model, args.tokenizer.as_deref())?;
    let report = evaluate(&loaded, args)?;
    let path = args.out.clone().unwrap_or_else(|| match &loaded.run_dir {
        Some(d) => d.join("eval.json"),
        None => PathBuf::from("eval.json"),
    });
    write_report(&path, &report)?;
    if out.json() {
        println!("{}", serde_json::to_string(&report).expect("reports serialize"));
    } else {
        print!("{}", table(&report));
        println!("  written to {}", path.display());
    }
    Ok(())
}
