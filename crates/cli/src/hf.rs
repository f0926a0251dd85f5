//! `pglm import-hf` / `pglm export-hf`: the Hugging Face GPT-2 layout (`config.json` +
//! `model.safetensors`, and GPT-2's `vocab.json` + `merges.txt` for a BPE tokenizer).

use std::path::PathBuf;

use anyhow::{Context, Result};
use pglm_model::Gpt;
use pglm_model::tokenizer::{BpeTokenizer, Tokenizer};

use crate::load::load_model;
use crate::progress::Output;

/// Arguments of `pglm import-hf`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A Hugging Face GPT-2 directory (config.json, model.safetensors; vocab.json and merges.txt
    /// for its tokenizer).
    pub dir: PathBuf,
    /// The pglm model file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A pglm tokenizer (JSON) to store with the model instead of the directory's GPT-2 files.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
}

/// Arguments of `pglm export-hf`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A run directory, a checkpoint or a model file.
    #[arg(short, long, value_name = "PATH")]
    pub model: PathBuf,
    /// The directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The tokenizer (JSON), when the model does not carry one.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
}

pub fn import(a: &ImportArgs, out: &Output) -> Result<()> {
    let model = Gpt::<f32>::from_hf_dir(&a.dir)?;
    let (vocab, merges) = (a.dir.join("vocab.json"), a.dir.join("merges.txt"));
    let tokenizer = match &a.tokenizer {
        Some(t) => Some(Tokenizer::load_json(t)?),
        None if vocab.exists() && merges.exists() => Some(Tokenizer::from_gpt2_files(&vocab, &merges)?),
        None => None,
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    model.save(&a.out, tokenizer.as_ref())?;
    let c = model.config();
    println!(
        "{}: GPT-2 with {} layers x {} wide, vocab {}{}",
        a.out.display(),
        c.n_layer,
        c.n_embd,
        c.vocab_size,
        if tokenizer.is_some() { ", with its tokenizer" } else { "" }
    );
    if tokenizer.is_none() {
        out.note(
            "note: no vocab.json/merges.txt in the directory: pass --tokenizer FILE when using the model",
        );
    }
    Ok(())
}

pub fn export(a: &ExportArgs, _out: &Output) -> Result<()> {
    let loaded = load_model(&a.model, a.tokenizer.as_deref())?;
    loaded.model.save_hf_dir(&a.out)?;
    // GPT-2's files for a BPE tokenizer (what transformers loads); pglm's JSON always, since a
    // character tokenizer has no GPT-2 form.
    if let Tokenizer::Bpe(bpe) = &loaded.tokenizer {
        BpeTokenizer::save_gpt2_files(bpe, &a.out)?;
    }
    loaded.tokenizer.save_json(a.out.join("pglm-tokenizer.json"))?;
    println!("{}: config.json, model.safetensors, pglm-tokenizer.json", a.out.display());
    Ok(())
}
