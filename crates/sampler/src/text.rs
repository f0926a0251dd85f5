//! From token ids to text, and stop strings matched across token boundaries.
//!
//! Byte-level tokenizers (GPT-2's BPE, a byte vocabulary) decode a sequence by concatenating each
//! token's bytes and reading the result as UTF-8. A completion therefore keeps the bytes generated so
//! far, appends each new token's bytes, and looks for a stop string only where it could have been
//! completed by the new bytes: a stop split over several tokens, or over the middle of a multi-byte
//! character, is found as soon as its last byte arrives.

/// How the sampler turns tokens into text: the vocabulary's end-of-sequence id and each token's bytes.
pub trait Detokenize: Sync {
    /// The end-of-sequence token, if the vocabulary has one.
    fn eos(&self) -> Option<u32>;
    /// Appends the bytes of token `id` to `out` (nothing for ids without text).
    fn push_bytes(&self, id: u32, out: &mut Vec<u8>);
}

/// No text: completions carry token ids only (empty `text`; stop strings never match).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoText {
    /// The end-of-sequence token, if any.
    pub eos: Option<u32>,
}

impl Detokenize for NoText {
    fn eos(&self) -> Option<u32> {
        self.eos
    }
    fn push_bytes(&self, _id: u32, _out: &mut Vec<u8>) {}
}

/// A vocabulary given as one byte string per token id (toy tasks and tests).
#[derive(Clone, Debug, Default)]
pub struct ByteTable {
    /// `pieces[id]` is the text of token `id`.
    pub pieces: Vec<Vec<u8>>,
    /// The end-of-sequence token, if any.
    pub eos: Option<u32>,
}

impl Detokenize for ByteTable {
    fn eos(&self) -> Option<u32> {
        self.eos
    }
    fn push_bytes(&self, id: u32, out: &mut Vec<u8>) {
        if let Some(p) = self.pieces.get(id as usize) {
            out.extend_from_slice(p);
        }
    }
}

/// A pglm tokenizer: each token's bytes; the special tokens (BOS, EOS, PAD) have no text.
impl Detokenize for pglm_model::tokenizer::Tokenizer {
    fn eos(&self) -> Option<u32> {
        pglm_model::tokenizer::Tokenizer::eos(self)
    }
    fn push_bytes(&self, id: u32, out: &mut Vec<u8>) {
        if !self.is_special(id)
            && let Some(b) = self.token_bytes(id)
        {
            out.extend_from_slice(b);
        }
    }
}

/// A set of stop strings, as UTF-8 bytes.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<Vec<u8>>,
}

impl StopStrings {
    /// The stops (empty strings are ignored: `SamplingParams::validate` refuses them).
    pub fn new(stops: &[String]) -> Self {
        StopStrings { stops: stops.iter().filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect() }
    }

    /// Whether there are no stops.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Finds a stop string in `text` that ends after byte `old_len` (the bytes before it were
    /// searched already). Returns `(which stop, start byte)` of the occurrence that starts first
    /// (the first listed stop on a tie).
    pub fn find(&self, text: &[u8], old_len: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (k, s) in self.stops.iter().enumerate() {
            // An occurrence ending after old_len starts at or after old_len + 1 − |s|.
            let from = (old_len + 1).saturating_sub(s.len());
            if let Some(at) = text[from..].windows(s.len()).position(|w| w == s.as_slice()) {
                let start = from + at;
                if best.is_none_or(|(_, b)| start < b) {
                    best = Some((k, start));
                }
            }
        }
        best
    }

    /// The stop string number `k`.
    pub fn get(&self, k: usize) -> &[u8] {
        &self.stops[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one by one and returns where the first stop is found: (piece index, stop, start).
    fn first_stop(stops: &[&str], pieces: &[&str]) -> Option<(usize, usize, usize)> {
        let s = StopStrings::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut text = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let old = text.len();
            text.extend_from_slice(p.as_bytes());
            if let Some((k, start)) = s.find(&text, old) {
                return Some((i, k, start));
            }
        }
        None
    }

    #[test]
    fn a_stop_split_across_tokens_is_found_when_its_last_byte_arrives() {
        assert_eq!(first_stop(&["</a>"], &["x<", "/", "a", ">tail"]), Some((3, 0, 1)));
        assert_eq!(first_stop(&["\n\n"], &["a\n", "\nb"]), Some((1, 0, 1)));
        assert_eq!(first_stop(&["abc"], &["ab", "x", "bc"]), None);
    }

    #[test]
    fn the_earliest_starting_stop_wins() {
        // One token completes both "cd" (starts at 2) and "bcde" (starts at 1).
        assert_eq!(first_stop(&["cd", "bcde"], &["ab", "cde"]), Some((1, 1, 1)));
        assert_eq!(first_stop(&["x", "x"], &["ax"]), Some((0, 0, 1)));
    }

    #[test]
    fn stops_match_inside_multibyte_characters_across_tokens() {
        // "é" is two bytes, split over two tokens by a byte-level tokenizer.
        let e = "é".as_bytes();
        let s = StopStrings::new(&["é!".to_string()]);
        let mut text = b"caf".to_vec();
        text.push(e[0]);
        assert_eq!(s.find(&text, 0), None);
        let old = text.len();
        text.extend_from_slice(&[e[1], b'!']);
        assert_eq!(s.find(&text, old), Some((0, 3)));
    }

    #[test]
    fn tables_and_no_text_decode() {
        let t = ByteTable { pieces: vec![b"a".to_vec(), b"bc".to_vec()], eos: Some(1) };
        let mut out = Vec::new();
        for id in [0, 1, 7] {
            t.push_bytes(id, &mut out);
        }
        assert_eq!(out, b"abc");
        assert_eq!(t.eos(), Some(1));
        NoText::default().push_bytes(0, &mut out);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn a_tokenizer_decodes_like_its_own_decode_without_special_tokens() {
        use pglm_model::tokenizer::{CharTokenizer, Tokenizer};
        let t = Tokenizer::Char(CharTokenizer::from_corpus("héllo wörld"));
        let mut ids = t.encode("wörld hé").unwrap();
        let eos = Detokenize::eos(&t).unwrap();
        ids.insert(0, t.bos().unwrap());
        ids.push(eos);
        let mut out = Vec::new();
        for &id in &ids {
            t.push_bytes(id, &mut out);
        }
        assert_eq!(String::from_utf8(out).unwrap(), "wörld hé");
    }
}
