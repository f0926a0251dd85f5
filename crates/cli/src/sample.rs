//! `pglm sample`: completions from a model, for prompts typed at a terminal, given with
//! `--prompt`, or read from a file (plain lines, or JSON lines with a `prompt` field).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pglm_model::tokenizer::Tokenizer;
use pglm_sampler::{Completion, Sampler, SamplingParams};

use crate::load::{Loaded, load_model};
use crate::progress::Output;

/// The decoding options (every field of `SamplingParams`).
#[derive(Debug, Clone, clap::Args)]
pub struct Decoding {
    /// Completions per prompt.
    #[arg(short, long, default_value_t = 1)]
    pub n: usize,
    /// Most tokens generated per completion.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy decoding.
    #[arg(short, long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below min_p times the top token's probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// CTRL's repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// A stop string (repeatable); the text is cut before it.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Seed of the sampling streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Decoding {
    /// As the sampler's parameters (validated).
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams {
            n: self.n,
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            stop_at_eos: !self.ignore_eos,
            stop: self.stop.clone(),
            seed: self.seed,
        };
        p.validate().map_err(|e| anyhow::anyhow!("{e} (see `pglm sample --help`)"))?;
        Ok(p)
    }
}

/// Arguments of `pglm sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A run directory, a checkpoint or a model file.
    #[arg(short, long, value_name = "PATH")]
    pub model: PathBuf,
    /// The tokenizer (JSON), when the model does not carry one.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// A prompt (repeatable). Without --prompt or --prompts: an interactive prompt on a terminal,
    /// else one prompt per line of standard input.
    #[arg(short, long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// A file of prompts: one per line, or JSON lines with a `prompt` field.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub decoding: Decoding,
}

/// A prompt's ids as the models are trained: `[BOS] text`.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = tokenizer.bos().into_iter().collect();
    ids.extend(tokenizer.encode(text).with_context(|| format!("cannot tokenize the prompt {text:?}"))?);
    Ok(ids)
}

/// The prompts of a file: JSON lines with `prompt`, or plain lines (blank lines skipped).
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => match o.get("prompt").and_then(|p| p.as_str()) {
                Some(p) => out.push(p.to_string()),
                None => bail!("{}:{}: a JSON line without a string `prompt` field", path.display(), i + 1),
            },
            _ => out.push(line.to_string()),
        }
    }
    Ok(out)
}

fn print_group(prompt: &str, group: &[Completion], out: &Output) {
    for c in group {
        if out.json() {
            let mut v = serde_json::to_value(c).expect("completions serialize");
            v["prompt"] = prompt.into();
            println!("{v}");
        } else if group.len() == 1 {
            println!("{prompt}{}", c.text);
        } else {
            println!("[{}] {prompt}{}", c.sample, c.text);
        }
    }
}

fn generate(
    l: &Loaded,
    sampler: &mut Sampler<f32>,
    prompts: &[String],
    p: &SamplingParams,
) -> Result<Vec<Vec<Completion>>> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|t| encode(&l.tokenizer, t)).collect::<Result<_>>()?;
    Ok(sampler.generate(&l.model, &ids, p, &l.tokenizer)?)
}

pub fn run(args: &Args, out: &Output) -> Result<()> {
    let params = args.decoding.params()?;
    let loaded = load_model(&args.model, args.tokenizer.as_deref())?;
    let mut sampler = Sampler::<f32>::new(loaded.model.config(), 32);
    let batch: Option<Vec<String>> = if let Some(f) = &args.prompts {
        Some(read_prompts(f)?)
    } else if !args.prompt.is_empty() {
        Some(args.prompt.clone())
    } else if !std::io::stdin().is_terminal() {
        Some(
            std::io::stdin()
                .lock()
                .lines()
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|l| !l.is_empty())
                .collect(),
        )
    } else {
        None
    };
    if let Some(prompts) = batch {
        for (prompt, group) in prompts.iter().zip(generate(&loaded, &mut sampler, &prompts, &params)?) {
            print_group(prompt, &group, out);
        }
        return Ok(());
    }
    // Interactive: one prompt per line until end of input (Ctrl-D) or an empty line twice.
    eprintln!("model {} — type a prompt, Enter to sample, Ctrl-D to quit", loaded.file.display());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut seed = params.seed;
    loop {
        eprint!("> ");
        std::io::stderr().flush().ok();
        let Some(line) = lines.next() else { break };
        let line = line?;
        if line.is_empty() {
            continue;
        }
        // A fresh seed per prompt, so asking twice gives new samples.
        let p = SamplingParams { seed, ..params.clone() };
        seed = seed.wrapping_add(1);
        match generate(&loaded, &mut sampler, std::slice::from_ref(&line), &p) {
            Ok(groups) => print_group(&line, &groups[0], out),
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}
