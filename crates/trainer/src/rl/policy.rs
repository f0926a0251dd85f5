//! The starting policy: read from a pretraining/SFT run, an RL run, or a model file; and the frozen
//! reference copy that the KL term compares against, kept in the RL run directory so that a resumed
//! run compares against exactly the same weights.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use pglm_autograd::Float;
use pglm_model::tokenizer::Tokenizer;
use pglm_model::{Gpt, GptConfig};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::checkpoint::{KIND as TRAIN_KIND, StateMeta, dtype_name, read_state};
use crate::rl::state::{RL_KIND, RlMeta};
use crate::run_dir::RunDir;

/// The container kind of the reference weights in an RL run directory.
pub const REFERENCE_KIND: &str = "pglm.rl-reference";

/// A policy's weights as read from disk.
pub struct InitPolicy<F> {
    /// The architecture.
    pub config: GptConfig,
    /// Every parameter by name.
    pub params: Vec<(String, ArrayD<F>)>,
    /// The tokenizer it was trained with.
    pub tokenizer: Tokenizer,
    /// The file the weights came from.
    pub source: PathBuf,
}

/// Reads `init`: a run directory (its `latest` checkpoint and `tokenizer.json`) or a model file
/// saved by `Gpt::save` with its tokenizer.
pub fn load_init<F: Float>(init: &Path) -> Result<InitPolicy<F>, TrainError> {
    let fail = |reason: String| TrainError::PolicyInit { path: init.into(), reason };
    if init.is_dir() {
        let run = RunDir::new(init);
        let ckpt = run.latest()?.ok_or_else(|| {
            fail("a run directory with a checkpoint (`latest`), found none: train it first".into())
        })?;
        let tokenizer = Tokenizer::load_json(run.tokenizer_path())?;
        let info = pglm_model::checkpoint::read_info(&ckpt)?;
        let (config, dtype, params) = match info.kind.as_str() {
            TRAIN_KIND => {
                let s =
                    read_state::<F, StateMeta>(&ckpt, TRAIN_KIND).map_err(|e| dtype_hint::<F>(e, &ckpt))?;
                (s.meta.model, s.meta.dtype, s.params)
            }
            RL_KIND => {
                let s = read_state::<F, RlMeta>(&ckpt, RL_KIND).map_err(|e| dtype_hint::<F>(e, &ckpt))?;
                (s.meta.model, s.meta.dtype, s.params)
            }
            other => {
                return Err(fail(format!(
                    "expected a training checkpoint, {} is a {other:?}",
                    ckpt.display()
                )));
            }
        };
        if dtype != dtype_name::<F>() {
            return Err(fail(format!(
                "the checkpoint holds {dtype} weights, this trainer runs in {}",
                dtype_name::<F>()
            )));
        }
        return Ok(InitPolicy { config, params, tokenizer, source: ckpt });
    }
    if !init.exists() {
        return Err(fail("no such file or directory (expected a run directory or a model file)".into()));
    }
    let (model, tokenizer) = Gpt::<f32>::load(init)?;
    let tokenizer =
        tokenizer.ok_or_else(|| fail("the model file has no tokenizer; save it with one".into()))?;
    let params =
        model.params.iter().map(|(_, p)| (p.name.clone(), p.value().mapv(|x| F::of(f64::from(x))))).collect();
    Ok(InitPolicy { config: model.config().clone(), params, tokenizer, source: init.into() })
}

/// A state that does not decode is most often one of the other element type: say so.
fn dtype_hint<F: Float>(e: TrainError, path: &Path) -> TrainError {
    match e {
        TrainError::Checkpoint(_) => TrainError::PolicyInit {
            path: path.into(),
            reason: format!("{e} (is it a checkpoint of {} weights?)", dtype_name::<F>()),
        },
        other => other,
    }
}

/// A model of `config` with the named `params` copied in. Parameters the source lacks are allowed
/// only for the value head (a critic added for PPO starts from its seeded initialisation).
pub fn build<F: Float>(
    config: GptConfig,
    seed: u64,
    params: Vec<(String, ArrayD<F>)>,
    source: &Path,
) -> Result<Gpt<F>, TrainError> {
    let mut model = Gpt::<F>::new(config, seed)?;
    let mut given: std::collections::HashMap<String, ArrayD<F>> = params.into_iter().collect();
    for (_, p) in model.params.iter_mut() {
        match given.remove(&p.name) {
            Some(v) if v.shape() == p.value().shape() => *p.value_mut() = v,
            Some(v) => {
                let (expected, found) = (format!("{:?}", p.value().shape()), format!("{:?}", v.shape()));
                return Err(TrainError::mismatch(source, format!("parameter {}", p.name), expected, found));
            }
            None if p.name.starts_with("value_head.") => {}
            None => {
                return Err(TrainError::mismatch(
                    source,
                    format!("parameter {}", p.name),
                    "present",
                    "missing",
                ));
            }
        }
    }
    if let Some(name) = given.keys().find(|n| !n.starts_with("value_head.")) {
        let field = format!("parameter {name}");
        return Err(TrainError::mismatch(source, field, "absent (not in this model)", "present"));
    }
    Ok(model)
}

/// The reference weights as stored in the run directory.
#[derive(Serialize, Deserialize)]
#[serde(bound = "F: Float")]
struct Reference<F: Float> {
    config: GptConfig,
    params: Vec<(String, ArrayD<F>)>,
}

/// Saves the reference policy (the policy's weights without a value head) in the run directory.
pub fn save_reference<F: Float>(path: &Path, model: &Gpt<F>) -> Result<(), TrainError> {
    let mut config = model.config().clone();
    config.value_head = false;
    let params = model
        .params
        .iter()
        .filter(|(_, p)| !p.name.starts_with("value_head."))
        .map(|(_, p)| (p.name.clone(), p.value().clone()))
        .collect();
    pglm_model::checkpoint::save(path, REFERENCE_KIND, &Reference { config, params })?;
    Ok(())
}

/// Loads the reference policy saved by [`save_reference`].
pub fn load_reference<F: Float>(path: &Path) -> Result<Gpt<F>, TrainError> {
    let r: Reference<F> = pglm_model::checkpoint::load(path, REFERENCE_KIND)?;
    build(r.config, 0, r.params, path)
}
