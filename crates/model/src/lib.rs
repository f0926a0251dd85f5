//! pglm-model: the GPT-2-style policy, tokenizers, checkpoints and Hugging Face interop (being written).

pub mod checkpoint;
pub mod tokenizer;
