//! What can go wrong when building, loading or using a tokenizer.

use std::path::PathBuf;

/// A tokenizer error: always names the file (or the input) and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written (missing file, permissions, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not valid JSON, or not JSON of the expected shape.
    #[error("{}: bad JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (it gives line and column).
        source: serde_json::Error,
    },
    /// A vocabulary is not usable: duplicate or missing ids, a token outside the byte-level alphabet, ...
    #[error("{}: bad vocabulary: {reason}", path.display())]
    BadVocab {
        /// The file (`vocab.json`, or the tokenizer JSON).
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A line of `merges.txt` (or an entry of the JSON merges list) is not a valid merge.
    #[error("{}: line {line}: bad merge {text:?}: {reason}", path.display())]
    BadMerge {
        /// The file.
        path: PathBuf,
        /// 1-based line number in `merges.txt` (entry number, 1-based, in a JSON merges list).
        line: usize,
        /// The line's text.
        text: String,
        /// What was wrong, e.g. which token is unknown.
        reason: String,
    },
    /// The character-level tokenizer met a character outside its alphabet.
    #[error("character {ch:?} (U+{:04X}) at position {position} (in characters) is not in the vocabulary", *ch as u32)]
    UnknownChar {
        /// The character.
        ch: char,
        /// Its index in the text, counted in characters from 0.
        position: usize,
    },
    /// A token id outside the vocabulary was given to decode.
    #[error("token id {id} at position {position} is outside the vocabulary (size {vocab_size})")]
    UnknownId {
        /// The id.
        id: u32,
        /// Its index in the id list.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Training was asked for something impossible.
    #[error("bad BPE training config: {0}")]
    BadConfig(String),
    /// A serialized tokenizer is inconsistent (e.g. from a checkpoint).
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
}

/// Result alias for tokenizer operations.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
