//! pglm-model: the GPT-2-style policy that pglm trains and samples, with its tokenizers,
//! checkpoints and Hugging Face interop.
//!
//! [`Gpt`] is a GPT-2 decoder (learned positions, pre-LayerNorm blocks, GELU MLP, tied LM head)
//! whose weights live in a named [`pglm_autograd::ParamStore`]. Its training forward runs on the
//! autograd tape ([`Gpt::forward_shared`] runs it with each prefix that consecutive sequences share
//! computed once, as a GRPO group's prompt); [`Gpt::forward_cached`] runs inference on a
//! preallocated [`KvCache`] without it.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use pglm_autograd::Tape;
//! use pglm_model::{Gpt, GptConfig};
//!
//! let model = Gpt::<f32>::new(GptConfig::new(16, 8, 2, 2, 16), 42)?;
//! let ids = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1u32, 2, 3]).unwrap();
//! let targets = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![2u32, 3, 4]).unwrap();
//! let mut tape = Tape::new();
//! let loss = model.loss(&mut tape, &ids, &targets, None, None)?;
//! let grads = tape.backward(loss);
//! assert!(tape.value(loss).iter().all(|l| (l - 16f32.ln()).abs() < 0.1)); // about ln(vocab) at init
//! # let _ = grads;
//! # Ok::<(), pglm_model::ModelError>(())
//! ```

pub mod checkpoint;
mod config;
mod error;
mod gpt;
pub mod hf;
mod infer;
mod model_file;
pub mod safetensors_io;
mod shared;
pub mod tokenizer;

pub use config::GptConfig;
pub use error::ModelError;
pub use gpt::{Gpt, Hidden};
pub use infer::{InferScratch, KvCache};
pub use model_file::{MODEL_KIND, SavedModel};
pub use shared::SharedRows;

#[cfg(test)]
mod gpt_tests;

#[cfg(any(test, feature = "gradcheck"))]
pub mod gradcheck;
