//! Loading a model for sampling, evaluation and export, from whatever the user points at: a run
//! directory (its latest checkpoint), a training checkpoint file, or a model file
//! (`pglm import-hf` output, `Gpt::save`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pglm_model::tokenizer::Tokenizer;
use pglm_model::{Gpt, MODEL_KIND};
use pglm_trainer::checkpoint::{KIND as TRAIN_STATE_KIND, TrainState};
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

/// The `kind` field of a pglm checkpoint container's header (see `pglm_model::checkpoint`).
fn container_kind(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; 24];
    f.read_exact(&mut head)
        .with_context(|| format!("{}: too short to be a pglm checkpoint", path.display()))?;
    if &head[..8] != b"PGLMCKPT" {
        bail!("{}: not a pglm checkpoint or model file (bad magic bytes)", path.display());
    }
    let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
    if !(1..=64).contains(&len) {
        bail!("{}: corrupt checkpoint header (kind length {len})", path.display());
    }
    let mut kind = vec![0u8; len];
    f.read_exact(&mut kind).with_context(|| format!("{}: truncated checkpoint header", path.display()))?;
    Ok(String::from_utf8_lossy(&kind).into_owned())
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
    let kind = container_kind(&file)?;
    let (model, saved_tokenizer) = if kind == MODEL_KIND {
        Gpt::<f32>::load(&file)?
    } else if kind == TRAIN_STATE_KIND {
        let state: TrainState<f32> = pglm_model::checkpoint::load(&file, TRAIN_STATE_KIND)?;
        (model_from_params(state.meta.model, state.params, &file)?, None)
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

/// A model of `config` with the checkpoint's tensors (names and shapes checked).
pub fn model_from_params(
    config: pglm_model::GptConfig,
    params: Vec<(String, ndarray::ArrayD<f32>)>,
    file: &Path,
) -> Result<Gpt<f32>> {
    let mut model = Gpt::<f32>::new(config, 0)?;
    if params.len() != model.params.len() {
        bail!("{}: {} tensors, the model has {}", file.display(), params.len(), model.params.len());
    }
    for ((_, p), (name, value)) in model.params.iter_mut().zip(params) {
        if p.name != name || p.value().shape() != value.shape() {
            bail!(
                "{}: tensor `{name}` {:?} does not fit parameter `{}` {:?}",
                file.display(),
                value.shape(),
                p.name,
                p.value().shape()
            );
        }
        *p.value_mut() = value;
    }
    Ok(model)
}
