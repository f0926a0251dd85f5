//! Byte-level BPE (Sennrich et al. 2016; GPT-2, Radford et al. 2019): encoding, decoding, validation.
//!
//! A token is a byte string. Ids below the vocabulary size name tokens; every one of the 256 single
//! bytes is a token, so any text can be encoded. Encoding cuts the text into words
//! ([`PreTokenizer`]), writes each word as its bytes' tokens, and then applies the learned merges
//! `(a, b) -> ab` inside the word, always the merge of lowest rank (earliest learned) first, and among
//! equal ranks the leftmost — the order Hugging Face `tokenizers` uses, so ids match it exactly.
//! Training lives in `train.rs`, GPT-2 file I/O in `gpt2.rs`.

use super::bytes::{bytes_to_token_string, token_string_to_bytes};
use super::error::{Result, TokenizerError};
use super::pretokenize::PreTokenizer;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::RwLock;

/// A pair of adjacent token ids.
pub(crate) type Pair = (u32, u32);

/// Multiply-rotate hasher (the "Fx" hash of rustc) for maps keyed by small integers: the pair maps are
/// the hot path of training and encoding, and SipHash's DoS resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A hash map keyed by token pairs.
pub(crate) type PairMap<V> = HashMap<Pair, V, BuildHasherDefault<FxHasher>>;

/// Words whose encodings are remembered; past this the cache stops growing.
const CACHE_CAPACITY: usize = 1 << 16;

/// Per-word encodings already computed (natural text repeats its words a lot). Not part of the
/// tokenizer's value: cloning gives an empty cache, equality ignores it, serde skips it.
#[derive(Default)]
struct WordCache(RwLock<HashMap<String, Box<[u32]>>>);

impl WordCache {
    fn get(&self, word: &str, out: &mut Vec<u32>) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(word).map(|ids| out.extend_from_slice(ids)).is_some()
    }
    fn insert(&self, word: &str, ids: &[u32]) {
        // A busy lock means another thread is inserting: skipping is cheaper than waiting.
        if let Ok(mut map) = self.0.try_write()
            && map.len() < CACHE_CAPACITY
        {
            map.insert(word.to_owned(), ids.into());
        }
    }
}

impl Clone for WordCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for WordCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The ids of the special tokens of a BPE vocabulary; `None` where the vocabulary has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
}

impl SpecialIds {
    fn contains(&self, id: u32) -> bool {
        [self.bos, self.eos, self.pad].contains(&Some(id))
    }
}

/// A byte-level BPE tokenizer: vocabulary, ranked merges, pre-tokenizer and special tokens.
///
/// Serializes (serde) as `{pre_tokenizer, vocab, merges, specials}` with tokens written in GPT-2's
/// byte-level alphabet (`"Ġthe"` for `" the"`) and merges as `"a b"` strings in rank order.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BpeRepr", into = "BpeRepr")]
pub struct BpeTokenizer {
    pre: PreTokenizer,
    /// id -> the token's bytes.
    tokens: Vec<Vec<u8>>,
    /// id -> the token written in the byte-level alphabet (as in `vocab.json`).
    names: Vec<String>,
    name_to_id: HashMap<String, u32>,
    /// byte -> id of its one-byte token (boxed: keeps the struct, and `Tokenizer`, small).
    byte_ids: Box<[u32; 256]>,
    /// rank -> merged pair.
    merges: Vec<Pair>,
    /// merged pair -> (rank, id of the merged token).
    merge_of: PairMap<(u32, u32)>,
    specials: SpecialIds,
    cache: WordCache,
}

/// The serialized form of [`BpeTokenizer`]; derived tables are rebuilt (and checked) on load.
#[derive(Serialize, Deserialize)]
struct BpeRepr {
    pre_tokenizer: PreTokenizer,
    vocab: Vec<String>,
    merges: Vec<String>,
    specials: SpecialIds,
}

/// Where a serialized tokenizer's errors point, lacking a file name.
const JSON_LABEL: &str = "<tokenizer JSON>";

impl TryFrom<BpeRepr> for BpeTokenizer {
    type Error = TokenizerError;
    fn try_from(r: BpeRepr) -> Result<Self> {
        let label = Path::new(JSON_LABEL);
        let merges = r.merges.iter().enumerate().map(|(i, m)| (i + 1, m.as_str()));
        Self::from_named_parts(r.pre_tokenizer, r.vocab, merges, r.specials, label, label)
    }
}

impl From<BpeTokenizer> for BpeRepr {
    fn from(t: BpeTokenizer) -> Self {
        let merges = t.merges.iter().map(|&(a, b)| format!("{} {}", t.name(a), t.name(b))).collect();
        BpeRepr { pre_tokenizer: t.pre, vocab: t.names, merges, specials: t.specials }
    }
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("pre_tokenizer", &self.pre)
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("specials", &self.specials)
            .finish()
    }
}

impl BpeTokenizer {
    /// Builds a tokenizer from its byte-level vocabulary (index = id) and merge lines `"a b"` in rank
    /// order, each with the line number to report. Checks everything a file could get wrong.
    pub(crate) fn from_named_parts<'a>(
        pre: PreTokenizer,
        names: Vec<String>,
        merge_lines: impl IntoIterator<Item = (usize, &'a str)>,
        specials: SpecialIds,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let bad_vocab = |reason: String| TokenizerError::BadVocab { path: vocab_path.to_owned(), reason };
        if names.len() > u32::MAX as usize {
            return Err(bad_vocab(format!("{} tokens do not fit u32 ids", names.len())));
        }
        let mut tokens = Vec::with_capacity(names.len());
        let mut name_to_id = HashMap::with_capacity(names.len());
        for (id, name) in names.iter().enumerate() {
            let bytes = token_string_to_bytes(name).filter(|b| !b.is_empty()).ok_or_else(|| {
                bad_vocab(format!(
                    "token {id} {name:?} is empty or has a character outside GPT-2's byte-level alphabet"
                ))
            })?;
            tokens.push(bytes);
            if let Some(first) = name_to_id.insert(name.clone(), id as u32) {
                return Err(bad_vocab(format!("token {name:?} appears twice (ids {first} and {id})")));
            }
        }
        let mut byte_ids = Box::new([u32::MAX; 256]);
        for (id, bytes) in tokens.iter().enumerate() {
            if let [b] = bytes[..] {
                byte_ids[b as usize] = id as u32;
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            let name = bytes_to_token_string(&[b as u8]);
            return Err(bad_vocab(format!(
                "no token for byte 0x{b:02X} ({name:?}): some text could not be encoded"
            )));
        }
        for (role, id) in [("bos", specials.bos), ("eos", specials.eos), ("pad", specials.pad)] {
            if let Some(id) = id.filter(|&id| id as usize >= names.len()) {
                return Err(bad_vocab(format!(
                    "{role} id {id} is outside the vocabulary of {}",
                    names.len()
                )));
            }
        }

        let mut merges = Vec::new();
        let mut merge_of = PairMap::default();
        for (line, text) in merge_lines {
            let bad = |reason: String| TokenizerError::BadMerge {
                path: merges_path.to_owned(),
                line,
                text: text.to_owned(),
                reason,
            };
            let mut parts = text.split(' ');
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected two tokens separated by one space".into()));
            };
            let id_of = |t: &str| {
                name_to_id.get(t).copied().ok_or_else(|| bad(format!("token {t:?} is not in the vocabulary")))
            };
            let pair = (id_of(a)?, id_of(b)?);
            let merged = id_of(&format!("{a}{b}"))?;
            let rank = merges.len() as u32;
            if let Some((first, _)) = merge_of.insert(pair, (rank, merged)) {
                return Err(bad(format!("duplicate of merge number {}", first + 1)));
            }
            merges.push(pair);
        }
        Ok(Self {
            pre,
            tokens,
            names,
            name_to_id,
            byte_ids,
            merges,
            merge_of,
            specials,
            cache: WordCache::default(),
        })
    }

    /// Number of tokens (ids are `0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Number of merges.
    pub fn num_merges(&self) -> usize {
        self.merges.len()
    }

    /// The special token ids.
    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Is `id` a special token (BOS, EOS or PAD)?
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.contains(id)
    }

    /// The pre-tokenizer.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The id of a token written in the byte-level alphabet (`"Ġthe"`, `"<|endoftext|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.name_to_id.get(token).copied()
    }

    /// The token `id` written in the byte-level alphabet, as in `vocab.json`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// The raw bytes of token `id` (for streaming decoders).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// The merges as `(a, b)` id pairs, in rank order.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// Encodes `text`. Never fails: every byte has a token. Special-token strings in `text` are
    /// encoded as plain text; add BOS/EOS ids yourself.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for word in self.pre.words(text) {
            if word.len() == 1 {
                out.push(self.byte_ids[word.as_bytes()[0] as usize]);
            } else if !self.cache.get(word, &mut out) {
                let start = out.len();
                self.encode_word(word.as_bytes(), &mut out);
                self.cache.insert(word, &out[start..]);
            }
        }
        out
    }

    /// Applies the merges to one word, lowest rank first (leftmost among equal ranks), appending
    /// the resulting ids to `out`.
    ///
    /// The word is a linked list of symbols; a min-heap holds `(rank, left position)` of every
    /// adjacent pair that has a merge. Entries go stale when a neighbour merges; a popped entry is
    /// used only if the pair now at that position still has that rank (a rank names one pair).
    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut sym: Vec<u32> = word.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut next: Vec<usize> = (1..=n).map(|j| if j < n { j } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        let rank_of = |a: u32, b: u32| self.merge_of.get(&(a, b)).map(|&(rank, _)| rank);
        for i in 0..n.saturating_sub(1) {
            if let Some(rank) = rank_of(sym[i], sym[i + 1]) {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j == NONE {
                continue;
            }
            let Some(&(r, merged)) = self.merge_of.get(&(sym[i], sym[j])) else { continue };
            if r != rank {
                continue;
            }
            // Merge j into i: sym[i] = ab, unlink j.
            sym[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
            }
            if prev[i] != NONE
                && let Some(rank) = rank_of(sym[prev[i]], merged)
            {
                heap.push(Reverse((rank, prev[i])));
            }
            if next[i] != NONE
                && let Some(rank) = rank_of(merged, sym[next[i]])
            {
                heap.push(Reverse((rank, i)));
            }
        }
        // Position 0 is never merged away (only right-hand symbols are), so start there.
        let mut i = 0;
        while i != NONE {
            out.push(sym[i]);
            i = next[i];
        }
    }

    /// The bytes of `ids`, concatenated. Fails on an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (position, &id) in ids.iter().enumerate() {
            let bytes = self.token_bytes(id).ok_or(TokenizerError::UnknownId {
                id,
                position,
                vocab_size: self.vocab_size(),
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Decodes `ids` to text. Byte sequences that are not valid UTF-8 (a character cut between
    /// tokens, or ids a model put in a bad order) become U+FFFD; use [`Self::decode_bytes`] or
    /// [`super::Utf8StreamDecoder`] when decoding a stream token by token.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::bytes::bytes_in_gpt2_order;
    use proptest::prelude::*;

    /// The 256 bytes plus `extra` tokens, with `merges` given as `"a b"` lines.
    fn toy(extra: &[&str], merges: &[&str]) -> Result<BpeTokenizer> {
        let mut names: Vec<String> =
            bytes_in_gpt2_order().iter().map(|&b| bytes_to_token_string(&[b])).collect();
        names.extend(extra.iter().map(|s| s.to_string()));
        let lines = merges.iter().enumerate().map(|(i, m)| (i + 1, *m));
        let p = Path::new("test");
        BpeTokenizer::from_named_parts(PreTokenizer::Gpt2, names, lines, SpecialIds::default(), p, p)
    }

    #[test]
    fn merges_apply_by_rank_not_by_position() {
        // "abc": rank 0 is (b, c), so "a" + "bc" even though (a, b) also merges.
        let t = toy(&["bc", "ab", "abc"], &["b c", "a b", "a bc"]).unwrap();
        let ids = t.encode("abc");
        assert_eq!(ids, vec![t.token_to_id("abc").unwrap()]);
        let ids = t.encode("abab c");
        let names: Vec<&str> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert_eq!(names, vec!["ab", "ab", "Ġ", "c"]);
    }

    #[test]
    fn repeated_pairs_merge_left_to_right() {
        let t = toy(&["aa"], &["a a"]).unwrap();
        let names: Vec<&str> = t.encode("aaaaa").iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert_eq!(names, vec!["aa", "aa", "a"]);
    }

    #[test]
    fn bad_parts_are_reported() {
        let err = toy(&["ab"], &["a b", "a xyz"]).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("\"xyz\" is not in the vocabulary"), "{err}");
        let err = toy(&[], &["a b"]).unwrap_err().to_string();
        assert!(err.contains("\"ab\" is not in the vocabulary"), "{err}");
        let err = toy(&["ab"], &["a b", "a b"]).unwrap_err().to_string();
        assert!(err.contains("duplicate"), "{err}");
        let err = toy(&["ab"], &["ab"]).unwrap_err().to_string();
        assert!(err.contains("two tokens"), "{err}");
        let err = toy(&["a"], &[]).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
        let err = toy(&["€"], &[]).unwrap_err().to_string();
        assert!(err.contains("outside GPT-2's byte-level alphabet"), "{err}");
    }

    #[test]
    fn unknown_ids_are_errors() {
        let t = toy(&[], &[]).unwrap();
        let err = t.decode(&[1, 999]).unwrap_err();
        assert!(matches!(err, TokenizerError::UnknownId { id: 999, position: 1, vocab_size: 256 }));
    }

    proptest! {
        #[test]
        fn bytes_only_vocab_round_trips(s in "\\PC{0,40}") {
            let t = toy(&[], &[]).unwrap();
            let ids = t.encode(&s);
            prop_assert_eq!(ids.len(), s.len());
            prop_assert_eq!(t.decode(&ids).unwrap(), s);
        }
    }
}
