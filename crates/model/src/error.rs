//! The model crate's errors: bad configs, bad batches, and the I/O of weights.

use std::path::PathBuf;

/// What went wrong in the model crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config field is out of range.
    #[error("model config: field `{field}` must be {expected}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What was expected.
        expected: String,
    },
    /// Token ids must come as a (batch, time) array with time >= 1.
    #[error("token ids must have shape (batch, time) with time >= 1, got {shape:?}")]
    BadBatch {
        /// The shape received.
        shape: Vec<usize>,
    },
    /// A sequence longer than the position table.
    #[error("sequence of {length} tokens is longer than the model's context length {context_length}")]
    ContextTooLong {
        /// Tokens in the sequence.
        length: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// Two arrays that must agree in shape do not.
    #[error("{what} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Which array.
        what: &'static str,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A value was asked of a model built without a value head.
    #[error("this model has no value head (set `value_head = true` in its config)")]
    NoValueHead,
    /// The KV cache has no room for more tokens in a sequence.
    #[error("KV cache slot {slot} is full ({capacity} tokens)")]
    CacheFull {
        /// The slot.
        slot: usize,
        /// Its capacity in tokens.
        capacity: usize,
    },
    /// A Hugging Face GPT-2 directory that cannot be used.
    #[error("{path}: {message}", path = path.display())]
    Hf {
        /// The file or directory.
        path: PathBuf,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A saved parameter does not fit the model its config describes.
    #[error("saved parameter {name} has shape {got:?}, expected {expected:?}")]
    ParamMismatch {
        /// The parameter.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// Reading or writing a safetensors file failed.
    #[error(transparent)]
    Safetensors(#[from] crate::safetensors_io::SafetensorsError),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}
