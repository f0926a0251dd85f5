//! Tokenizers: character-level, byte-level BPE (trained here), and GPT-2's own BPE files.
//!
//! [`Tokenizer`] is the one type the rest of pglm uses; the checkpoint stores it (serde). Encoding
//! treats text as plain text: special-token names inside it are not parsed, so callers add BOS/EOS
//! ids themselves. Decoding writes special tokens as their names.
//!
//! ```
//! use pglm_model::tokenizer::{BpeTokenizer, BpeTrainConfig, Tokenizer};
//! let cfg = BpeTrainConfig { vocab_size: 300, ..Default::default() };
//! let tok = Tokenizer::Bpe(BpeTokenizer::train(&["the cat sat on the mat"], &cfg).unwrap());
//! let ids = tok.encode("the mat").unwrap();
//! assert_eq!(tok.decode(&ids).unwrap(), "the mat");
//! ```

mod bpe;
mod bytes;
mod char;
mod error;
mod gpt2;
mod pretokenize;
mod train;

pub use bpe::{BpeTokenizer, SpecialIds};
pub use bytes::{
    Utf8StreamDecoder, byte_to_char, bytes_to_token_string, char_to_byte, token_string_to_bytes,
};
pub use char::{CHAR_BOS, CHAR_EOS, CHAR_PAD, CharTokenizer};
pub use error::{Result, TokenizerError};
pub use gpt2::GPT2_END_OF_TEXT;
pub use pretokenize::{Gpt2Words, PreTokenizer};
pub use train::BpeTrainConfig;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Any of pglm's tokenizers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per character.
    Char(CharTokenizer),
    /// Byte-level BPE (trained by pglm, or GPT-2's).
    Bpe(BpeTokenizer),
}

impl From<CharTokenizer> for Tokenizer {
    fn from(t: CharTokenizer) -> Self {
        Tokenizer::Char(t)
    }
}

impl From<BpeTokenizer> for Tokenizer {
    fn from(t: BpeTokenizer) -> Self {
        Tokenizer::Bpe(t)
    }
}

impl Tokenizer {
    /// Loads GPT-2's `vocab.json` + `merges.txt` (see [`BpeTokenizer::from_gpt2_files`]).
    pub fn from_gpt2_files(vocab_json: impl AsRef<Path>, merges_txt: impl AsRef<Path>) -> Result<Self> {
        BpeTokenizer::from_gpt2_files(vocab_json, merges_txt).map(Tokenizer::Bpe)
    }

    /// Encodes `text`. Fails only for the char tokenizer, on a character outside its alphabet.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Bpe(t) => Ok(t.encode(text)),
        }
    }

    /// Encodes many texts in parallel (same results as one [`Self::encode`] each).
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// Decodes `ids` to text; fails on an id outside the vocabulary. For BPE, bytes that are not valid
    /// UTF-8 (e.g. a character cut at the end of a partial sequence) become U+FFFD: to decode token by
    /// token, use [`Self::decode_bytes`] or [`Self::token_bytes`] with a [`Utf8StreamDecoder`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Char(t) => t.decode(ids),
            Tokenizer::Bpe(t) => t.decode(ids),
        }
    }

    /// The bytes of `ids`, concatenated (exact, no replacement of invalid UTF-8).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match self {
            Tokenizer::Char(t) => t.decode(ids).map(String::into_bytes),
            Tokenizer::Bpe(t) => t.decode_bytes(ids),
        }
    }

    /// The bytes of one token (a special token's are its name); `None` outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match self {
            Tokenizer::Char(t) => t.token_bytes(id),
            Tokenizer::Bpe(t) => t.token_bytes(id),
        }
    }

    /// Number of tokens; ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab_size(),
            Tokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    /// Beginning-of-sequence id, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(_) => Some(CHAR_BOS),
            Tokenizer::Bpe(t) => t.specials().bos,
        }
    }

    /// End-of-sequence id, if the vocabulary has one.
    pub fn eos(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(_) => Some(CHAR_EOS),
            Tokenizer::Bpe(t) => t.specials().eos,
        }
    }

    /// Padding id, if the vocabulary has one (GPT-2's has none).
    pub fn pad(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(_) => Some(CHAR_PAD),
            Tokenizer::Bpe(t) => t.specials().pad,
        }
    }

    /// Is `id` one of BOS, EOS, PAD?
    pub fn is_special(&self, id: u32) -> bool {
        [self.bos(), self.eos(), self.pad()].contains(&Some(id))
    }

    /// The id of a token given as text: a character or special name for the char tokenizer, the
    /// byte-level form (`"Ġthe"`) for BPE.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Char(t) => t.token_to_id(token),
            Tokenizer::Bpe(t) => t.token_to_id(token),
        }
    }

    /// The text form of token `id` (the inverse of [`Self::token_to_id`]).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self {
            Tokenizer::Char(t) => t.id_to_token(id),
            Tokenizer::Bpe(t) => t.id_to_token(id),
        }
    }

    /// The tokenizer as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("tokenizers serialize to JSON")
    }

    /// Writes the tokenizer as JSON to `path`, atomically (temporary file, then rename).
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_json().as_bytes())
    }

    /// Reads a tokenizer written by [`Self::save_json`], checking its consistency.
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenizerError::Io { path: path.to_owned(), source })?;
        serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.to_owned(), source })
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a torn one: write a
/// temporary file in the same directory, flush it to disk, and rename it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| TokenizerError::Io { path: path.to_owned(), source };
    let name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests;
