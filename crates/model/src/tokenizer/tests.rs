//! Tests of the [`Tokenizer`] type across tokenizers: round trips, specials, JSON, determinism, speed.

use super::*;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Instant;

/// Pseudo-English text of about `bytes` bytes: Zipf-ish words from syllables, digits, punctuation,
/// contractions, some accented and CJK words, and line breaks. Deterministic in `seed`.
pub(crate) fn generated_corpus(bytes: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const SYLLABLES: [&str; 24] = [
        "the", "an", "re", "in", "on", "er", "st", "ing", "qu", "ly", "ca", "to", "mo", "de", "ver", "pli",
        "zu", "ka", "sé", "ñu", "über", "ø", "ch", "ai",
    ];
    let lexicon: Vec<String> = (0..4000)
        .map(|i| {
            let mut r = next();
            if i % 97 == 0 {
                return ["東京", "学习", "데이터", "мир", "ελλάδα"][(r % 5) as usize].to_string();
            }
            let n = 1 + (r % 4) as usize;
            (0..n)
                .map(|_| {
                    r /= 24;
                    SYLLABLES[(r % 24) as usize]
                })
                .collect()
        })
        .collect();
    let mut text = String::with_capacity(bytes + 64);
    while text.len() < bytes {
        let r = next();
        // Zipf-like: the index is the square of a uniform draw, so low ranks dominate.
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        let word = &lexicon[((u * u) * lexicon.len() as f64) as usize];
        match r % 23 {
            0 => text.push_str(", "),
            1 => text.push_str(". "),
            2 => text.push('\n'),
            3 => text.push_str(&format!(" {}", r % 1000)),
            4 => text.push_str("'s "),
            5 => text.push_str("  "),
            6 if r % 7 == 0 => text.push_str(" 🙂 "),
            _ => text.push(' '),
        }
        if r % 11 == 0 {
            let mut cs = word.chars();
            text.extend(cs.next().map(|c| c.to_ascii_uppercase()));
            text.push_str(cs.as_str());
        } else {
            text.push_str(word);
        }
    }
    text
}

static SMALL_BPE: LazyLock<BpeTokenizer> = LazyLock::new(|| {
    let cfg = BpeTrainConfig { vocab_size: 700, ..Default::default() };
    BpeTokenizer::train(&[generated_corpus(60_000, 1)], &cfg).expect("training succeeds")
});

/// A fresh path in the temporary directory.
fn temp_path(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pglm-tokenizer-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn trained_bpe_compresses_and_round_trips() {
    let t = &*SMALL_BPE;
    assert_eq!(t.vocab_size(), 700);
    let text = generated_corpus(5_000, 2);
    let ids = t.encode(&text);
    assert!(ids.len() * 2 < text.len(), "{} ids for {} bytes", ids.len(), text.len());
    assert_eq!(t.decode(&ids).unwrap(), text);
}

#[test]
fn special_tokens_of_each_kind() {
    let c = Tokenizer::from(CharTokenizer::from_corpus("ab"));
    assert_eq!((c.pad(), c.bos(), c.eos()), (Some(0), Some(1), Some(2)));
    assert!(c.is_special(1) && !c.is_special(3));
    let b = Tokenizer::from(SMALL_BPE.clone());
    assert_eq!((b.pad(), b.bos(), b.eos()), (Some(0), Some(1), Some(2)));
    assert_eq!(b.id_to_token(2), Some("<|eos|>"));
    assert_eq!(b.token_to_id("<|bos|>"), Some(1));
    // Special names inside text are plain text, and decode to themselves.
    let ids = b.encode("<|eos|>").unwrap();
    assert!(!ids.contains(&2));
    assert_eq!(b.decode(&[1, 2]).unwrap(), "<|bos|><|eos|>");
    assert_eq!(b.decode(&ids).unwrap(), "<|eos|>");
    // GPT-2 style: one name for BOS and EOS gives one id; no PAD.
    let cfg = BpeTrainConfig {
        vocab_size: 260,
        pad: None,
        bos: Some(GPT2_END_OF_TEXT.into()),
        eos: Some(GPT2_END_OF_TEXT.into()),
        ..Default::default()
    };
    let g = Tokenizer::from(BpeTokenizer::train(&["hello hello"], &cfg).unwrap());
    assert_eq!((g.pad(), g.bos(), g.eos()), (None, Some(0), Some(0)));
}

#[test]
fn unknown_character_is_an_error_not_a_panic() {
    let c = Tokenizer::from(CharTokenizer::from_corpus("0123456789+="));
    let err = c.encode("12+x=3").unwrap_err();
    assert_eq!(
        err.to_string(),
        "character 'x' (U+0078) at position 3 (in characters) is not in the vocabulary"
    );
}

#[test]
fn json_save_and_load_give_equal_tokenizers() {
    for t in [Tokenizer::from(CharTokenizer::from_corpus("héllo wörld")), Tokenizer::from(SMALL_BPE.clone())]
    {
        let path = temp_path("tok.json");
        t.save_json(&path).unwrap();
        let back = Tokenizer::load_json(&path).unwrap();
        assert_eq!(back, t);
        let text = "héllo wörld";
        assert_eq!(back.encode(text).unwrap(), t.encode(text).unwrap());
        // Saving again over the file works (rename replaces it) and leaves no temporary file behind.
        back.save_json(&path).unwrap();
        let dir = path.parent().unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
    }
}

#[test]
fn gpt2_files_round_trip() {
    let dir = temp_path("x").parent().unwrap().to_owned();
    SMALL_BPE.save_gpt2_files(&dir).unwrap();
    let back = BpeTokenizer::from_gpt2_files(dir.join("vocab.json"), dir.join("merges.txt")).unwrap();
    assert_eq!(back.merges(), SMALL_BPE.merges());
    let text = generated_corpus(2_000, 3);
    assert_eq!(back.encode(&text), SMALL_BPE.encode(&text));
}

#[test]
fn malformed_json_files_are_errors() {
    let err = Tokenizer::load_json("no/such/tokenizer.json").unwrap_err();
    assert!(matches!(&err, TokenizerError::Io { path, .. } if path.ends_with("tokenizer.json")), "{err}");

    let path = temp_path("bad.json");
    std::fs::write(&path, "{\"bpe\": ").unwrap();
    let err = Tokenizer::load_json(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Json { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("{}: bad JSON", path.display())), "{err}");

    // Well-formed JSON, inconsistent tokenizer: a merge of an unknown token.
    let mut value: serde_json::Value =
        serde_json::from_str(&Tokenizer::from(SMALL_BPE.clone()).to_json()).unwrap();
    value["bpe"]["merges"][3] = "Ġ qqqq".into();
    std::fs::write(&path, value.to_string()).unwrap();
    let err = Tokenizer::load_json(&path).unwrap_err().to_string();
    assert!(err.contains("line 4") && err.contains("\"qqqq\" is not in the vocabulary"), "{err}");
}

#[test]
fn stream_decoding_token_by_token_matches_decode() {
    let t = Tokenizer::from(SMALL_BPE.clone());
    let text = "naïve 東京 🙂 done";
    let ids = t.encode(text).unwrap();
    let mut dec = Utf8StreamDecoder::new();
    let mut out = String::new();
    for &id in &ids {
        out += &dec.push(t.token_bytes(id).unwrap());
    }
    out += &dec.finish();
    assert_eq!(out, text);
    assert_eq!(t.decode_bytes(&ids).unwrap(), text.as_bytes());
}

#[test]
fn training_is_independent_of_the_thread_count() {
    let corpus = generated_corpus(300_000, 4);
    let cfg = BpeTrainConfig { vocab_size: 1200, ..Default::default() };
    let train_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| BpeTokenizer::train(&[corpus.as_str()], &cfg).unwrap())
    };
    let one = train_with(1);
    assert_eq!(one.vocab_size(), 1200);
    assert_eq!(train_with(3), one);
    assert_eq!(train_with(2).merges(), one.merges());
}

/// `cargo test -p pglm-model --release bpe_training_speed -- --ignored --nocapture`
#[test]
#[ignore = "timing; run by hand"]
fn bpe_training_speed() {
    let corpus = generated_corpus(3 << 20, 5);
    for vocab_size in [4096, 16384] {
        let cfg = BpeTrainConfig { vocab_size, ..Default::default() };
        let start = Instant::now();
        let t = BpeTokenizer::train(&[corpus.as_str()], &cfg).unwrap();
        let train = start.elapsed();
        let start = Instant::now();
        let ids = t.encode(&corpus);
        let encode = start.elapsed();
        println!(
            "{:.1} MB, vocab {vocab_size} ({} merges), {} threads: train {:.2?}, encode {:.2?} ({:.1} MB/s, {:.2} bytes/token)",
            corpus.len() as f64 / 1e6,
            t.num_merges(),
            rayon::current_num_threads(),
            train,
            encode,
            corpus.len() as f64 / 1e6 / encode.as_secs_f64(),
            corpus.len() as f64 / ids.len() as f64,
        );
        assert_eq!(t.decode(&ids).unwrap(), corpus);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bpe_round_trips_any_string(s in any::<String>()) {
        let t = Tokenizer::from(SMALL_BPE.clone());
        let ids = t.encode(&s).unwrap();
        prop_assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
        prop_assert_eq!(t.decode(&ids).unwrap(), s);
    }

    #[test]
    fn bpe_round_trips_corpus_like_strings(s in "[ a-zé\\n'.,0-9🙂東京]{0,80}") {
        let t = &*SMALL_BPE;
        prop_assert_eq!(t.decode(&t.encode(&s)).unwrap(), s);
    }

    #[test]
    fn char_round_trips_through_the_enum(corpus in "\\PC{1,20}", n in 0usize..40) {
        let t = Tokenizer::from(CharTokenizer::from_corpus(&corpus));
        let text: String = corpus.chars().cycle().take(n).collect();
        prop_assert_eq!(t.decode(&t.encode(&text).unwrap()).unwrap(), text);
    }
}
