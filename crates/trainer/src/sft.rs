//! Supervised fine-tuning data: `[BOS] prompt completion [EOS]`, with the loss on the completion
//! and the end marker only.

use std::path::Path;

use pglm_model::tokenizer::Tokenizer;
use pglm_rewards::dataset::SftRecord;

use crate::TrainError;
use crate::data::Sequence;

/// The BOS and EOS ids, which SFT sequences need.
pub fn markers(tokenizer: &Tokenizer) -> Result<(u32, u32), TrainError> {
    let bos = tokenizer.bos().ok_or(TrainError::MissingSpecial {
        which: "BOS",
        why: "starts every prompt in SFT and task evaluation",
    })?;
    let eos = tokenizer.eos().ok_or(TrainError::MissingSpecial {
        which: "EOS",
        why: "ends every completion in SFT and stops greedy decoding",
    })?;
    Ok((bos, eos))
}

/// The text a character tokenizer for these records must cover.
pub fn records_text(records: &[SftRecord]) -> String {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.prompt);
        text.push_str(&r.completion);
    }
    text
}

/// Tokenizes `[BOS] prompt` (what greedy decoding is given), naming the line on failure.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    prompt: &str,
    path: &Path,
    line: usize,
) -> Result<Vec<u32>, TrainError> {
    let (bos, _) = markers(tokenizer)?;
    let mut ids = vec![bos];
    let body = tokenizer.encode(prompt).map_err(|source| TrainError::Encode {
        path: path.into(),
        line,
        field: "prompt",
        source: Box::new(source),
    })?;
    ids.extend(body);
    Ok(ids)
}

/// One sequence per record; fails on text the tokenizer cannot encode and on examples longer
/// than `seq_len + 1` tokens, naming the file and line.
pub fn sft_sequences(
    records: &[SftRecord],
    path: &Path,
    tokenizer: &Tokenizer,
    seq_len: usize,
) -> Result<Vec<Sequence>, TrainError> {
    let (_, eos) = markers(tokenizer)?;
    records
        .iter()
        .map(|r| {
            let mut tokens = encode_prompt(tokenizer, &r.prompt, path, r.line)?;
            let loss_from = tokens.len();
            let completion = tokenizer.encode(&r.completion).map_err(|source| TrainError::Encode {
                path: path.into(),
                line: r.line,
                field: "completion",
                source: Box::new(source),
            })?;
            tokens.extend(completion);
            tokens.push(eos);
            if tokens.len() > seq_len + 1 {
                return Err(TrainError::ExampleTooLong {
                    path: path.into(),
                    line: r.line,
                    length: tokens.len(),
                    limit: seq_len + 1,
                });
            }
            Ok(Sequence { tokens, loss_from })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pglm_model::tokenizer::CharTokenizer;

    fn rec(line: usize, prompt: &str, completion: &str) -> SftRecord {
        SftRecord { line, prompt: prompt.into(), completion: completion.into() }
    }

    #[test]
    fn loss_starts_at_the_completion() {
        let recs = [rec(1, "1+2=", "3")];
        let tok = Tokenizer::Char(CharTokenizer::from_corpus(&records_text(&recs)));
        let seqs = sft_sequences(&recs, Path::new("s.jsonl"), &tok, 16).unwrap();
        let s = &seqs[0];
        assert_eq!(s.tokens.len(), 7); // BOS 1 + 2 = 3 EOS
        assert_eq!(s.loss_from, 5);
        assert_eq!(s.loss_tokens(), 2); // "3" and EOS
    }

    #[test]
    fn too_long_and_unencodable_examples_name_the_line() {
        let recs = [rec(1, "ab", "c"), rec(4, "abcabc", "c")];
        let tok = Tokenizer::Char(CharTokenizer::from_corpus("abc"));
        let err = sft_sequences(&recs, Path::new("s.jsonl"), &tok, 5).unwrap_err();
        assert!(matches!(err, TrainError::ExampleTooLong { line: 4, length: 9, .. }), "{err}");
        let recs = [rec(2, "ab", "cz")];
        let err = sft_sequences(&recs, Path::new("s.jsonl"), &tok, 16).unwrap_err();
        assert!(matches!(err, TrainError::Encode { line: 2, field: "completion", .. }), "{err}");
        assert!(err.to_string().starts_with("s.jsonl:2: field `completion`"), "{err}");
    }
}
