//! Character-level tokenizer: one id per Unicode scalar value seen in a corpus, plus PAD, BOS, EOS.
//!
//! Ids: 0 = PAD, 1 = BOS, 2 = EOS, then the corpus's characters in code point order. Small
//! vocabularies like this suit toy tasks (arithmetic, string reversal) where BPE would only blur the
//! structure the policy must learn.

use super::error::{Result, TokenizerError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Id of the padding token.
pub const CHAR_PAD: u32 = 0;
/// Id of the beginning-of-sequence token.
pub const CHAR_BOS: u32 = 1;
/// Id of the end-of-sequence token.
pub const CHAR_EOS: u32 = 2;
/// Number of special tokens before the characters.
const N_SPECIAL: usize = 3;
/// Default names of PAD, BOS, EOS (what they decode to).
const DEFAULT_SPECIALS: [&str; N_SPECIAL] = ["<pad>", "<bos>", "<eos>"];

/// A character-level tokenizer.
///
/// Serializes as `{specials: [pad, bos, eos], chars: "<the alphabet in id order>"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CharRepr", into = "CharRepr")]
pub struct CharTokenizer {
    /// id -> token text: the special names, then each character as a string.
    names: Vec<String>,
    /// The alphabet, in id order (id = index + 3).
    chars: Vec<char>,
    char_to_id: HashMap<char, u32>,
}

/// The serialized form of [`CharTokenizer`].
#[derive(Serialize, Deserialize)]
struct CharRepr {
    specials: [String; N_SPECIAL],
    chars: String,
}

impl TryFrom<CharRepr> for CharTokenizer {
    type Error = TokenizerError;
    fn try_from(r: CharRepr) -> Result<Self> {
        Self::new(r.chars.chars(), r.specials)
    }
}

impl From<CharTokenizer> for CharRepr {
    fn from(t: CharTokenizer) -> Self {
        let specials = std::array::from_fn(|i| t.names[i].clone());
        CharRepr { specials, chars: t.chars.into_iter().collect() }
    }
}

impl CharTokenizer {
    /// The tokenizer of every distinct character of `corpus`, with specials `<pad>`, `<bos>`, `<eos>`.
    pub fn from_corpus(corpus: &str) -> Self {
        let mut chars: Vec<char> = corpus.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::new(chars, DEFAULT_SPECIALS.map(String::from))
            .expect("distinct chars and default specials are valid")
    }

    /// A tokenizer of exactly `alphabet` (in this id order) with special names `[pad, bos, eos]`.
    /// Fails if a character repeats or the special names are empty or not distinct.
    pub fn new(alphabet: impl IntoIterator<Item = char>, specials: [String; N_SPECIAL]) -> Result<Self> {
        if specials.iter().any(String::is_empty)
            || specials[0] == specials[1]
            || specials[1] == specials[2]
            || specials[0] == specials[2]
        {
            return Err(TokenizerError::Invalid(format!(
                "special token names must be distinct and non-empty: {specials:?}"
            )));
        }
        let chars: Vec<char> = alphabet.into_iter().collect();
        let mut char_to_id = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if char_to_id.insert(c, (N_SPECIAL + i) as u32).is_some() {
                return Err(TokenizerError::Invalid(format!(
                    "character {c:?} appears twice in the alphabet"
                )));
            }
        }
        // A special named like a character would make `token_to_id` ambiguous.
        let is_a_char = |s: &&String| {
            let mut cs = s.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if char_to_id.contains_key(&c))
        };
        if let Some(s) = specials.iter().find(is_a_char) {
            return Err(TokenizerError::Invalid(format!(
                "special token {s:?} is also a character of the alphabet"
            )));
        }
        let names = specials.into_iter().chain(chars.iter().map(char::to_string)).collect();
        Ok(Self { names, chars, char_to_id })
    }

    /// Number of tokens (3 specials + the alphabet).
    pub fn vocab_size(&self) -> usize {
        self.names.len()
    }

    /// The alphabet in id order (ids from 3).
    pub fn alphabet(&self) -> &[char] {
        &self.chars
    }

    /// The id of a token: a one-character string, or a special token's name.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        let mut it = token.chars();
        if let (Some(c), None) = (it.next(), it.next())
            && let Some(&id) = self.char_to_id.get(&c)
        {
            return Some(id);
        }
        self.names[..N_SPECIAL].iter().position(|n| n == token).map(|i| i as u32)
    }

    /// The text of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// The UTF-8 bytes of token `id` (a special token's bytes are its name).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.id_to_token(id).map(str::as_bytes)
    }

    /// Encodes `text`, one id per character. A character outside the alphabet is an error naming it
    /// and its position (in characters).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| {
                self.char_to_id.get(&ch).copied().ok_or(TokenizerError::UnknownChar { ch, position })
            })
            .collect()
    }

    /// The concatenated token texts of `ids` (special tokens as their names).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            let token = self.id_to_token(id).ok_or(TokenizerError::UnknownId {
                id,
                position,
                vocab_size: self.vocab_size(),
            })?;
            out.push_str(token);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_specials_then_sorted_characters() {
        let t = CharTokenizer::from_corpus("hello, wörld");
        assert_eq!(t.alphabet(), &[' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w', 'ö']);
        assert_eq!(t.vocab_size(), 13);
        assert_eq!(t.encode("hello").unwrap(), vec![7, 6, 8, 8, 9]);
        assert_eq!(t.token_to_id("<bos>"), Some(CHAR_BOS));
        assert_eq!(t.token_to_id("<eos>"), Some(CHAR_EOS));
        assert_eq!(t.token_to_id("<pad>"), Some(CHAR_PAD));
        assert_eq!(t.token_to_id("ö"), Some(12));
        assert_eq!(t.token_to_id("x"), None);
        assert_eq!(t.decode(&[CHAR_BOS, 7, 12, CHAR_EOS]).unwrap(), "<bos>hö<eos>");
    }

    #[test]
    fn unknown_characters_and_ids_are_errors() {
        let t = CharTokenizer::from_corpus("abc");
        let err = t.encode("ab€c").unwrap_err();
        assert!(matches!(err, TokenizerError::UnknownChar { ch: '€', position: 2 }));
        assert!(err.to_string().contains("'€' (U+20AC) at position 2"), "{err}");
        assert!(matches!(t.decode(&[3, 6]), Err(TokenizerError::UnknownId { id: 6, position: 1, .. })));
    }

    #[test]
    fn invalid_alphabets_are_rejected() {
        let specials = DEFAULT_SPECIALS.map(String::from);
        assert!(CharTokenizer::new("aba".chars(), specials).is_err());
        let same = ["<s>", "<s>", "<e>"].map(String::from);
        assert!(CharTokenizer::new("ab".chars(), same).is_err());
        let clash = ["a", "<s>", "<e>"].map(String::from);
        assert!(CharTokenizer::new("ab".chars(), clash).is_err());
        let bad = r#"{"specials":["<pad>","<bos>","<eos>"],"chars":"aa"}"#;
        assert!(serde_json::from_str::<CharTokenizer>(bad).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_on_its_alphabet(corpus in "\\PC{1,30}", picks in proptest::collection::vec(any::<usize>(), 0..50)) {
            let t = CharTokenizer::from_corpus(&corpus);
            let text: String = picks.iter().map(|&i| t.alphabet()[i % t.alphabet().len()]).collect();
            let ids = t.encode(&text).unwrap();
            prop_assert_eq!(ids.len(), text.chars().count());
            prop_assert!(ids.iter().all(|&id| id >= 3 && (id as usize) < t.vocab_size()));
            prop_assert_eq!(t.decode(&ids).unwrap(), text);
        }

        #[test]
        fn json_round_trip(corpus in "\\PC{0,30}") {
            let t = CharTokenizer::from_corpus(&corpus);
            let back: CharTokenizer = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(back, t);
        }
    }
}
