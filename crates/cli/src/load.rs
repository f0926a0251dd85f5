//! Loading a model for sampling, evaluation and export, from whatever the user points at: a run
//! directory (its latest checkpoint), a training checkpoint file, or a model file
//! (`pglm import-hf` output, `Gpt::save`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use pglm_model::tokenizer::Tokenizer;
use pglm_model::{Gpt, MODEL_KIND};
use pglm_trainer::checkpoint::{KIND as TRAIN_STATE_KIND, StateMeta, read_state};
use pglm_trainer::rl::policy::build;
use pglm_trainer::rl::state::{RL_KIND, RlMeta};
use pglm_trainer::run_dir::RunDir;

/// A model ready to use, and where it came from.
pub struct Loaded {
    /// The weights.
    pub model: Gpt<f32>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The run directory, when the model came from one (outputs default to it).
    pub run_dir: Option<PathBuf>,
    /// The checkpoint or model file read.
    pub file: PathBuf,
}

/// Loads a model from a run directory, a checkpoint file or a model file. `tokenizer` overrides
/// (or supplies) the tokenizer.
pub fn load_model(path: &Path, tokenizer: Option<&Path>) -> Result<Loaded> {
    if !path.exists() {
        bail!(
            "{}: no such file or directory (give a run directory, a checkpoint or a model file)",
            path.display()
        );
    }
    let (file, run_dir) = if path.is_dir() {
        let run = RunDir::new(path);
        let Some(latest) = run.latest()? else {
            bail!(
                "{}: not a run directory with a checkpoint (no `latest` file); train one with `pglm sft` \
                 or give a model file",
                path.display()
            );
        };
        (latest, Some(path.to_path_buf()))
    } else {
        // checkpoints/step-N.ckpt inside a run directory: the run is two levels up.
        let run = path.parent().and_then(Path::parent).filter(|r| r.join("tokenizer.json").exists());
        (path.to_path_buf(), run.map(Path::to_path_buf))
    };
    let kind = pglm_model::checkpoint::read_info(&file)?.kind;
    let (model, saved_tokenizer) = if kind == MODEL_KIND {
        Gpt::<f32>::load(&file)?
    } else if kind == TRAIN_STATE_KIND {
        let state = read_state::<f32, StateMeta>(&file, TRAIN_STATE_KIND)?;
        (build(state.meta.model, 0, state.params, &file)?, None)
    } else if kind == RL_KIND {
        let state = read_state::<f32, RlMeta>(&file, RL_KIND)?;
        (build(state.meta.model, 0, state.params, &file)?, None)
    } else {
        bail!("{}: a pglm file of kind `{kind}`, not a model or a training checkpoint", file.display());
    };
    let tokenizer = match (tokenizer, saved_tokenizer, &run_dir) {
        (Some(t), _, _) => Tokenizer::load_json(t)?,
        (None, Some(t), _) => t,
        (None, None, Some(run)) => Tokenizer::load_json(run.join("tokenizer.json"))?,
        (None, None, None) => bail!("{}: holds no tokenizer; give one with --tokenizer FILE", file.display()),
    };
    if tokenizer.vocab_size() > model.config().vocab_size {
        bail!(
            "the tokenizer has {} tokens but the model only {}: they do not belong together",
            tokenizer.vocab_size(),
            model.config().vocab_size
        );
    }
    Ok(Loaded { model, tokenizer, run_dir, file })
}
