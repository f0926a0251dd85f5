//! `pglm tokenizer train`: a byte-level BPE or a character tokenizer from a corpus, saved as JSON
//! (what `tokenizer = { kind = "file", path = ... }` in a training config reads).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use pglm_model::tokenizer::{BpeTokenizer, BpeTrainConfig, CharTokenizer, Tokenizer};

use crate::progress::Output;

/// `pglm tokenizer ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Learn a tokenizer from text files (.jsonl files: their prompts and completions).
    Train(TrainArgs),
}

/// The tokenizer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenizerKind {
    /// Byte-level BPE with GPT-2 pre-tokenization (encodes any text).
    Bpe,
    /// One token per character seen in the corpus.
    Char,
}

/// Arguments of `pglm tokenizer train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Corpus files.
    #[arg(required = true, value_name = "FILE")]
    pub corpus: Vec<PathBuf>,
    /// Where to write the tokenizer (JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// BPE or characters.
    #[arg(long, value_enum, default_value = "bpe")]
    pub kind: TokenizerKind,
    /// BPE: the vocabulary size (3 special tokens + 256 bytes + merges).
    #[arg(long, default_value_t = 1024)]
    pub vocab_size: usize,
    /// BPE: a pair must occur this often to be merged.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
}

/// The texts of a corpus file: the whole file, or each JSONL line's prompt and completion.
fn read_texts(path: &PathBuf) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        let records = pglm_rewards::dataset::read_sft(path)?;
        return Ok(records.into_iter().map(|r| r.prompt + &r.completion).collect());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(vec![text])
}

pub fn run(cmd: &Command, out: &Output) -> Result<()> {
    let Command::Train(a) = cmd;
    let mut texts = Vec::new();
    for p in &a.corpus {
        texts.extend(read_texts(p)?);
    }
    if texts.iter().all(|t| t.is_empty()) {
        bail!("the corpus is empty: give files with some text");
    }
    let tokenizer = match a.kind {
        TokenizerKind::Char => Tokenizer::Char(CharTokenizer::from_corpus(&texts.concat())),
        TokenizerKind::Bpe => {
            let cfg = BpeTrainConfig {
                vocab_size: a.vocab_size,
                min_frequency: a.min_frequency,
                ..Default::default()
            };
            Tokenizer::Bpe(BpeTokenizer::train(&texts, &cfg)?)
        }
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    tokenizer.save_json(&a.out)?;
    if out.json() {
        println!("{}", serde_json::json!({"file": a.out, "vocab_size": tokenizer.vocab_size()}));
    } else {
        println!("{} tokens  {}", tokenizer.vocab_size(), a.out.display());
    }
    Ok(())
}
