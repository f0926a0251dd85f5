//! Next-token pretraining data: a text corpus cut into windows of `seq_len + 1` tokens.

use std::path::Path;

use pglm_model::tokenizer::{Tokenizer, TokenizerError};

use crate::TrainError;
use crate::data::Sequence;

/// Reads a corpus; fails on a missing, non-UTF-8 or empty (whitespace-only) file.
pub fn read_corpus(path: &Path) -> Result<String, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        TrainError::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}")))
    })?;
    if text.trim().is_empty() {
        return Err(TrainError::EmptyCorpus { path: path.into() });
    }
    Ok(text)
}

/// Tokenizes `text` and cuts it into non-overlapping windows: window `i` is tokens
/// `[i·seq_len, (i+1)·seq_len]` (inclusive: the last token is the final target), so consecutive
/// windows share one token and every token but the first is a target exactly once.
pub fn corpus_sequences(
    text: &str,
    path: &Path,
    tokenizer: &Tokenizer,
    seq_len: usize,
) -> Result<Vec<Sequence>, TrainError> {
    let ids = tokenizer.encode(text).map_err(|e| encode_error(text, path, e))?;
    if ids.len() < 2 {
        return Err(TrainError::EmptyCorpus { path: path.into() });
    }
    let windows = (ids.len() - 1) / seq_len;
    Ok((0..windows)
        .map(|i| Sequence { tokens: ids[i * seq_len..=(i + 1) * seq_len].to_vec(), loss_from: 1 })
        .collect())
}

/// Names the corpus line of an unknown character (the tokenizer reports its char position).
fn encode_error(text: &str, path: &Path, source: TokenizerError) -> TrainError {
    let line = match &source {
        TokenizerError::UnknownChar { position, .. } => {
            1 + text.chars().take(*position).filter(|&c| c == '\n').count()
        }
        _ => 1,
    };
    TrainError::Encode { path: path.into(), line, field: "text", source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pglm_model::tokenizer::CharTokenizer;

    #[test]
    fn windows_cover_the_corpus_once() {
        let tok = Tokenizer::Char(CharTokenizer::from_corpus("abcdefghij"));
        let seqs = corpus_sequences("abcdefghij", Path::new("c.txt"), &tok, 3).unwrap();
        assert_eq!(seqs.len(), 3); // 10 tokens: targets 1..=9 in windows of 3
        assert_eq!(seqs[1].tokens, tok.encode("defg").unwrap());
    }

    #[test]
    fn unknown_character_names_its_line() {
        let tok = Tokenizer::Char(CharTokenizer::from_corpus("ab\n"));
        let err = corpus_sequences("ab\nab\naXb", Path::new("c.txt"), &tok, 2).unwrap_err();
        assert!(matches!(err, TrainError::Encode { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("c.txt:3"), "{err}");
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.txt");
        std::fs::write(&path, "  \n").unwrap();
        let err = read_corpus(&path).unwrap_err();
        assert!(matches!(err, TrainError::EmptyCorpus { .. }), "{err}");
        assert!(err.to_string().contains("empty.txt"), "{err}");
    }
}
