//! Optimizers, gradient clipping and learning-rate schedules.
//!
//! The optimizers follow PyTorch's `torch.optim` update rules exactly (same formulas, same order of
//! operations), so a trajectory can be checked against PyTorch step by step:
//!
//! - [`Sgd`]: SGD with optional (Nesterov) momentum and L2 weight decay, dampening 0.
//! - [`Adam`]: Adam with L2 weight decay folded into the gradient (`g ← g + λp`).
//! - [`AdamW`]: Adam with decoupled weight decay (`p ← p − lr·λ·p`), Loshchilov & Hutter (2019).
//!
//! All of them implement [`Optimizer`]: `opt.step(&mut store, lr)` updates every parameter from its
//! accumulated gradient. The learning rate is an argument of each step, so a schedule
//! ([`LrSchedule::lr_at`]) stays outside the optimizer; the step counter (which Adam's bias
//! correction needs) lives inside it. A step never zeroes the gradients: call
//! [`ParamStore::zero_grad`] yourself, as in PyTorch.
//!
//! Weight decay applies only to the parameters whose [`crate::Param::decay`] flag is true. By default
//! that is every tensor of rank ≥ 2 (weight matrices and embeddings), while biases and LayerNorm
//! gains are not decayed, as nanoGPT configures its AdamW parameter groups.
//!
//! Optimizer state (moments and step count) is plain serde data for checkpoints:
//! [`Optimizer::state`] borrows it, [`Optimizer::load_state`] installs a saved one after checking that
//! it fits the store, or returns an [`OptimError`].
//!
//! The update kernels are elementwise and run over contiguous buffers in fixed-size chunks with rayon,
//! so results do not depend on the number of threads. [`clip_grad_norm`] reduces in f64 over the same
//! fixed chunks, in a fixed order.

mod adam;
mod clip;
mod schedule;
mod sgd;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod torch_reference;

pub use adam::{Adam, AdamState, AdamW};
pub use clip::clip_grad_norm;
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdState};

use ndarray::ArrayD;

use crate::{Float, ParamStore};

/// Elements per rayon task in the optimizer and clipping kernels. Fixed (never derived from the thread
/// count) so that chunked reductions give bit-identical results on any machine.
pub(crate) const CHUNK: usize = 1 << 15;

/// A gradient-descent optimizer over a [`ParamStore`].
pub trait Optimizer<F: Float> {
    /// The serializable state (moments, step count) saved in checkpoints.
    type State: serde::Serialize + serde::de::DeserializeOwned + Clone;

    /// Updates every parameter of `store` from its accumulated gradient with learning rate `lr`, and
    /// increments the step counter. The first step allocates the state to match the store.
    ///
    /// # Panics
    /// If the state was built for a store with a different number or shapes of parameters (the same
    /// optimizer must always be used with the same store).
    fn step(&mut self, store: &mut ParamStore<F>, lr: f64);

    /// Number of steps taken so far (restored by [`Optimizer::load_state`]).
    fn steps(&self) -> u64;

    /// The current state, for checkpoints.
    fn state(&self) -> &Self::State;

    /// Replaces the state with a saved one, after checking it against the parameters of `store`.
    /// On error the current state is left unchanged.
    fn load_state(&mut self, state: Self::State, store: &ParamStore<F>) -> Result<(), OptimError>;
}

/// Errors from loading optimizer state or validating a schedule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// The state holds buffers for a different number of parameters than the store.
    #[error("optimizer state {buffer} holds {state} tensors but the parameter store has {store}")]
    ParamCount {
        /// Which buffer (`"m"`, `"v"`, `"velocity"`).
        buffer: &'static str,
        /// Number of tensors in the state buffer.
        state: usize,
        /// Number of parameters in the store.
        store: usize,
    },
    /// A state tensor does not have the shape of its parameter.
    #[error(
        "optimizer state {buffer} for parameter {name:?} has shape {state:?} but the parameter has shape {param:?}"
    )]
    ShapeMismatch {
        /// Which buffer (`"m"`, `"v"`, `"velocity"`).
        buffer: &'static str,
        /// The parameter's name.
        name: String,
        /// Shape of the saved state tensor.
        state: Vec<usize>,
        /// Shape of the parameter in the store.
        param: Vec<usize>,
    },
    /// A learning-rate schedule with meaningless settings.
    #[error("invalid learning-rate schedule: {0}")]
    InvalidSchedule(String),
}

/// Checks that a per-parameter buffer (`m`, `v`, velocity) matches the store's shapes one to one.
/// An empty buffer is accepted: it means "not allocated yet" and is filled at the next step.
fn check_buffer<F: Float>(
    buffer: &'static str,
    tensors: &[ArrayD<F>],
    store: &ParamStore<F>,
) -> Result<(), OptimError> {
    if tensors.is_empty() {
        return Ok(());
    }
    if tensors.len() != store.len() {
        return Err(OptimError::ParamCount { buffer, state: tensors.len(), store: store.len() });
    }
    for ((_, p), t) in store.iter().zip(tensors) {
        if p.value().shape() != t.shape() {
            return Err(OptimError::ShapeMismatch {
                buffer,
                name: p.name.clone(),
                state: t.shape().to_vec(),
                param: p.value().shape().to_vec(),
            });
        }
    }
    Ok(())
}

/// Allocates a zero buffer per parameter on first use; afterwards asserts it still fits the store.
fn ensure_buffer<F: Float>(buffer: &'static str, tensors: &mut Vec<ArrayD<F>>, store: &ParamStore<F>) {
    if tensors.is_empty() {
        *tensors = store.iter().map(|(_, p)| ArrayD::zeros(p.value().raw_dim())).collect();
    }
    if let Err(e) = check_buffer(buffer, tensors, store) {
        panic!("Optimizer::step: {e} (was the optimizer used with another store?)");
    }
}
