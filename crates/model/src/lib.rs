//! pglm-model: the GPT-2-style policy, tokenizers, checkpoints and Hugging Face interop (being written).

pub mod checkpoint;
mod config;
mod error;
mod gpt;
mod infer;
pub mod tokenizer;

pub use config::GptConfig;
pub use error::ModelError;
pub use gpt::{Gpt, Hidden};
pub use infer::{InferScratch, KvCache};

#[cfg(test)]
mod gpt_tests;

#[cfg(any(test, feature = "gradcheck"))]
pub mod gradcheck;
pub mod safetensors_io;
