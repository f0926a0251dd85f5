//! GPT-2's tokenizer files: `vocab.json` (token -> id) and `merges.txt` (one merge `"a b"` a line,
//! in rank order, after a `#version` header). Hugging Face `tokenizers` writes the same two files for
//! a ByteLevel BPE model, so these load too.

use super::bpe::{BpeTokenizer, SpecialIds};
use super::error::{Result, TokenizerError};
use super::pretokenize::PreTokenizer;
use super::write_atomic;
use std::collections::HashMap;
use std::path::Path;

/// GPT-2's only special token, used as both BOS and EOS.
pub const GPT2_END_OF_TEXT: &str = "<|endoftext|>";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_owned(), source })
}

impl BpeTokenizer {
    /// Loads GPT-2's `vocab.json` and `merges.txt`, with GPT-2's pre-tokenizer. If the vocabulary has
    /// `<|endoftext|>` it becomes both BOS and EOS; there is no PAD.
    pub fn from_gpt2_files(vocab_json: impl AsRef<Path>, merges_txt: impl AsRef<Path>) -> Result<Self> {
        let (vocab_path, merges_path) = (vocab_json.as_ref(), merges_txt.as_ref());
        Self::from_gpt2_parts(&read(vocab_path)?, &read(merges_path)?, vocab_path, merges_path)
    }

    /// As [`Self::from_gpt2_files`], from the files' contents; errors name them `vocab.json` and
    /// `merges.txt`.
    pub fn from_gpt2_str(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::from_gpt2_parts(vocab_json, merges_txt, Path::new("vocab.json"), Path::new("merges.txt"))
    }

    fn from_gpt2_parts(
        vocab_json: &str,
        merges_txt: &str,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let map: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|source| TokenizerError::Json { path: vocab_path.to_owned(), source })?;
        let names = dense_names(map)
            .map_err(|reason| TokenizerError::BadVocab { path: vocab_path.to_owned(), reason })?;
        let eot = names.iter().position(|n| n == GPT2_END_OF_TEXT).map(|i| i as u32);
        let specials = SpecialIds { bos: eot, eos: eot, pad: None };
        let lines = merges_txt
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line))
            .filter(|(i, line)| !(line.is_empty() || (*i == 1 && line.starts_with("#version"))));
        Self::from_named_parts(PreTokenizer::Gpt2, names, lines, specials, vocab_path, merges_path)
    }

    /// Writes `vocab.json` and `merges.txt` into `dir` (atomically, each), in the format that GPT-2,
    /// Hugging Face `tokenizers` (`BPE.from_file`) and [`Self::from_gpt2_files`] read.
    pub fn save_gpt2_files(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mut vocab = String::from("{");
        for id in 0..self.vocab_size() as u32 {
            let name = self.id_to_token(id).expect("id below vocab_size");
            if id > 0 {
                vocab.push(',');
            }
            vocab += &serde_json::to_string(name).expect("a string serializes");
            vocab += &format!(":{id}");
        }
        vocab.push('}');
        let mut merges = String::from("#version: 0.2\n");
        for &(a, b) in self.merges() {
            let (a, b) = (
                self.id_to_token(a).expect("merge ids exist"),
                self.id_to_token(b).expect("merge ids exist"),
            );
            merges += &format!("{a} {b}\n");
        }
        write_atomic(&dir.join("vocab.json"), vocab.as_bytes())?;
        write_atomic(&dir.join("merges.txt"), merges.as_bytes())
    }
}

/// Turns `token -> id` into an id-indexed list, requiring the ids to be exactly `0..n`.
fn dense_names(map: HashMap<String, u32>) -> std::result::Result<Vec<String>, String> {
    let n = map.len();
    let mut names: Vec<Option<String>> = vec![None; n];
    for (name, id) in map {
        let slot = names
            .get_mut(id as usize)
            .ok_or_else(|| format!("token {name:?} has id {id}, but ids must be 0..{n} (one per token)"))?;
        if let Some(other) = slot.replace(name.clone()) {
            return Err(format!("tokens {other:?} and {name:?} share id {id}"));
        }
    }
    // With n tokens, no id >= n and no shared id, every slot is filled.
    Ok(names.into_iter().map(|n| n.expect("ids are a permutation of 0..n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::bytes::{bytes_in_gpt2_order, bytes_to_token_string};

    fn byte_vocab() -> Vec<String> {
        bytes_in_gpt2_order().iter().map(|&b| bytes_to_token_string(&[b])).collect()
    }

    fn vocab_json(names: &[String]) -> String {
        let map: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        serde_json::to_string(&map).unwrap()
    }

    #[test]
    fn loads_a_small_gpt2_style_vocabulary() {
        let mut names = byte_vocab();
        names.extend(["Ġt", "Ġth", "Ġthe", GPT2_END_OF_TEXT].map(String::from));
        let t =
            BpeTokenizer::from_gpt2_str(&vocab_json(&names), "#version: 0.2\nĠ t\nĠt h\nĠth e\n").unwrap();
        assert_eq!(t.vocab_size(), 260);
        assert_eq!(t.specials(), SpecialIds { bos: Some(259), eos: Some(259), pad: None });
        assert_eq!(t.encode(" the"), vec![258]);
        assert_eq!(t.decode(&[258, 259]).unwrap(), " the<|endoftext|>");
    }

    #[test]
    fn merge_errors_give_the_line_number() {
        let mut names = byte_vocab();
        names.push("Ġt".into());
        let err =
            BpeTokenizer::from_gpt2_str(&vocab_json(&names), "#version: 0.2\nĠ t\nĠt hh\n").unwrap_err();
        match &err {
            TokenizerError::BadMerge { path, line, text, reason } => {
                assert_eq!(path, Path::new("merges.txt"));
                assert_eq!(*line, 3);
                assert_eq!(text, "Ġt hh");
                assert!(reason.contains("\"hh\""), "{reason}");
            }
            other => panic!("expected BadMerge, got {other:?}"),
        }
        assert!(err.to_string().starts_with("merges.txt: line 3: bad merge"), "{err}");
    }

    #[test]
    fn vocabulary_errors() {
        let names = byte_vocab();
        let mut map: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        map.insert("Ġx", 300);
        let err = BpeTokenizer::from_gpt2_str(&serde_json::to_string(&map).unwrap(), "").unwrap_err();
        assert!(err.to_string().contains("has id 300"), "{err}");
        let err = BpeTokenizer::from_gpt2_str("{\"a\": 0,", "").unwrap_err();
        assert!(matches!(err, TokenizerError::Json { .. }), "{err}");
        let err = BpeTokenizer::from_gpt2_str(&vocab_json(&names[..255]), "").unwrap_err();
        assert!(err.to_string().contains("no token for byte 0xAD"), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = BpeTokenizer::from_gpt2_files("no/such/vocab.json", "no/such/merges.txt").unwrap_err();
        assert!(matches!(&err, TokenizerError::Io { path, .. } if path == Path::new("no/such/vocab.json")));
        assert!(err.to_string().starts_with("no/such/vocab.json: "), "{err}");
    }
}
