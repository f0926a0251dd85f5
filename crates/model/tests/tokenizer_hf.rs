//! pglm's GPT-2 tokenizer against Hugging Face `tokenizers`.
//!
//! The fixture (made by `scripts/make_tokenizer_fixture.py`, committed so CI needs no Python) holds a
//! GPT-2-style byte-level BPE that `tokenizers` trained (`vocab.json`, `merges.txt`), the corpus it
//! trained on, and ~200 strings with the ids `tokenizers` gives them.

use pglm_model::tokenizer::{BpeTokenizer, BpeTrainConfig, GPT2_END_OF_TEXT, Tokenizer, TokenizerError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Fixture {
    tokenizers_version: String,
    train: TrainSettings,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct TrainSettings {
    vocab_size: usize,
    min_frequency: u64,
    special_tokens: Vec<String>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(fixture_dir().join("cases.json")).expect("fixture cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn hf_tokenizer() -> Tokenizer {
    let dir = fixture_dir();
    Tokenizer::from_gpt2_files(dir.join("vocab.json"), dir.join("merges.txt")).expect("fixture loads")
}

#[test]
fn tokenizer_hf_encoding_matches_hugging_face() {
    let fx = fixture();
    let tok = hf_tokenizer();
    assert!(fx.cases.len() >= 190, "only {} cases", fx.cases.len());
    let mut failures = Vec::new();
    for case in &fx.cases {
        let ids = tok.encode(&case.text).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}: ours {:?}, tokenizers {} {:?}",
                case.text, ids, fx.tokenizers_version, case.ids
            ));
        }
        assert_eq!(tok.decode(&case.ids).unwrap(), case.text, "decode of {:?}", case.ids);
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), fx.cases.len(), failures.join("\n"));
}

#[test]
fn tokenizer_hf_fixture_has_gpt2_specials_and_size() {
    let fx = fixture();
    let tok = hf_tokenizer();
    assert_eq!(tok.vocab_size(), fx.train.vocab_size);
    assert_eq!(fx.train.special_tokens, vec![GPT2_END_OF_TEXT.to_string()]);
    assert_eq!(tok.bos(), Some(0));
    assert_eq!(tok.eos(), Some(0));
    assert_eq!(tok.pad(), None);
    assert_eq!(tok.token_to_id("Ġ"), tok.encode(" ").unwrap().first().copied());
}

/// Not required (only the encoding must match), but checks the claim in `train.rs`: with the same
/// corpus, settings and id layout our trainer learns the very merges `tokenizers` learned.
#[test]
fn tokenizer_hf_training_learns_the_same_merges() {
    let fx = fixture();
    let dir = fixture_dir();
    let corpus = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let special = Some(fx.train.special_tokens[0].clone());
    let cfg = BpeTrainConfig {
        vocab_size: fx.train.vocab_size,
        min_frequency: fx.train.min_frequency,
        pad: None,
        bos: special.clone(),
        eos: special,
    };
    let ours = BpeTokenizer::train(&[corpus], &cfg).unwrap();
    let hf = BpeTokenizer::from_gpt2_files(dir.join("vocab.json"), dir.join("merges.txt")).unwrap();
    assert_eq!(ours.num_merges(), hf.num_merges());
    for (rank, (a, b)) in ours.merges().iter().zip(hf.merges()).enumerate() {
        assert_eq!(
            a,
            b,
            "merge {rank}: ours {:?}, tokenizers {:?}",
            name_pair(&ours, *a),
            name_pair(&hf, *b)
        );
    }
    assert_eq!(ours, hf);
}

fn name_pair(t: &BpeTokenizer, (a, b): (u32, u32)) -> (String, String) {
    (t.id_to_token(a).unwrap().to_owned(), t.id_to_token(b).unwrap().to_owned())
}

#[test]
fn tokenizer_hf_loader_reports_bad_merges_with_line_numbers() {
    let dir = fixture_dir();
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let mut lines: Vec<&str> = merges.lines().collect();
    lines[5] = "Ġ zzzzunknown";
    let tmp = std::env::temp_dir().join(format!("pglm-hf-merges-{}.txt", std::process::id()));
    std::fs::write(&tmp, lines.join("\n")).unwrap();
    let err = BpeTokenizer::from_gpt2_files(dir.join("vocab.json"), &tmp).unwrap_err();
    let _ = std::fs::remove_file(&tmp);
    match &err {
        TokenizerError::BadMerge { path, line, .. } => {
            assert_eq!(path, &tmp);
            assert_eq!(*line, 6);
        }
        other => panic!("expected BadMerge, got {other}"),
    }
    assert!(err.to_string().contains("\"zzzzunknown\" is not in the vocabulary"), "{err}");
}
