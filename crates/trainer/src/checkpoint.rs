//! The full training state in one checkpoint file (the model crate's self-checking container):
//! weights, AdamW moments and step count, the trainer's step (which fixes the schedule's
//! position), the data cursor (which fixes the data order), the guard's counters and the clock.
//! Dropout seeds are derived from `(seed, step, micro-batch)`, so no RNG state needs saving.

use std::path::Path;

use ndarray::ArrayD;
use pglm_autograd::Float;
use pglm_autograd::optim::AdamState;
use pglm_model::GptConfig;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::DataCursor;
use crate::guard::GuardState;

/// The checkpoint kind (the container refuses files of another kind).
pub const KIND: &str = "pglm.train-state";

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// The model's config (checked against the run's on load).
    pub model: GptConfig,
    /// The run's seed (checked on load).
    pub seed: u64,
    /// Optimizer steps completed.
    pub step: u64,
    /// The data order's position.
    pub cursor: DataCursor,
    /// The non-finite guard's counters.
    pub guard: GuardState,
    /// Wall-clock seconds spent so far (the `elapsed_s` metric continues from here).
    pub elapsed_s: f64,
}

/// What is written (borrowing the tensors: no copy of the model to save it).
#[derive(Serialize)]
struct StateOut<'a, F: Float, M> {
    meta: &'a M,
    params: Vec<(&'a str, &'a ArrayD<F>)>,
    optimizer: &'a AdamState<F>,
}

/// A trainer's state as read back: its own record `M`, the tensors and AdamW's state.
#[derive(Deserialize)]
#[serde(bound(deserialize = "F: Float, M: serde::de::DeserializeOwned"))]
pub struct State<F: Float, M> {
    /// The trainer's record (step, cursor, counters, config, ...).
    pub meta: M,
    /// Every parameter by name, in store order.
    pub params: Vec<(String, ArrayD<F>)>,
    /// AdamW's moments and step count.
    pub optimizer: AdamState<F>,
}

/// The pretraining/SFT trainer's state.
pub type TrainState<F> = State<F, StateMeta>;

/// Writes a state of `kind` atomically to `path`.
pub fn write_state<F: Float, M: Serialize>(
    path: &Path,
    kind: &str,
    meta: &M,
    params: &pglm_autograd::ParamStore<F>,
    optimizer: &AdamState<F>,
) -> Result<(), TrainError> {
    let params = params.iter().map(|(_, p)| (p.name.as_str(), p.value())).collect();
    let out = StateOut { meta, params, optimizer };
    pglm_model::checkpoint::save(path, kind, &out)?;
    Ok(())
}

/// Reads a state of `kind` (no checks beyond the container's).
pub fn read_state<F: Float, M: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<State<F, M>, TrainError> {
    Ok(pglm_model::checkpoint::load(path, kind)?)
}

/// The name of `F` stored in checkpoints.
pub fn dtype_name<F: Float>() -> &'static str {
    if std::mem::size_of::<F>() == 4 { "f32" } else { "f64" }
}

/// Writes the state atomically to `path`.
pub fn save_state<F: Float>(
    path: &Path,
    meta: &StateMeta,
    params: &pglm_autograd::ParamStore<F>,
    optimizer: &AdamState<F>,
) -> Result<(), TrainError> {
    write_state(path, KIND, meta, params, optimizer)
}

/// Reads a state and checks that it was written for `model`, the element type `F` and `seed`.
///
/// A file saved with the other element type fails to decode (the container's `Decode` error,
/// naming the file); a file of another model config decodes and is then refused by field.
pub fn load_state<F: Float>(path: &Path, model: &GptConfig, seed: u64) -> Result<TrainState<F>, TrainError> {
    let state: TrainState<F> = read_state(path, KIND)?;
    check_meta::<F>(path, &state.meta.dtype, &state.meta.model, state.meta.seed, model, seed)?;
    Ok(state)
}

/// Checks a state's element type, model config and seed against the run's, naming the first
/// field that differs.
pub fn check_meta<F: Float>(
    path: &Path,
    dtype: &str,
    ckpt_model: &GptConfig,
    ckpt_seed: u64,
    model: &GptConfig,
    seed: u64,
) -> Result<(), TrainError> {
    let mismatch =
        |field: String, expected: String, found: String| TrainError::mismatch(path, field, expected, found);
    if dtype != dtype_name::<F>() {
        return Err(mismatch("dtype".into(), dtype_name::<F>().into(), dtype.into()));
    }
    if ckpt_model != model {
        let run = serde_json::to_value(model).expect("configs serialize");
        let ckpt = serde_json::to_value(ckpt_model).expect("configs serialize");
        let field = run
            .as_object()
            .and_then(|m| m.iter().find(|(k, v)| ckpt.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()))
            .unwrap_or_default();
        return Err(mismatch(format!("model.{field}"), run[&field].to_string(), ckpt[&field].to_string()));
    }
    if ckpt_seed != seed {
        return Err(mismatch("run.seed".into(), seed.to_string(), ckpt_seed.to_string()));
    }
    Ok(())
}
