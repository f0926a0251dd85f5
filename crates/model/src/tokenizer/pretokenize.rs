//! Pre-tokenization: cutting text into words before BPE, so merges never cross a word boundary.
//!
//! GPT-2's rule is the regular expression
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! The `regex` crate has no look-around, so the lookahead alternative `\s+(?!\S)` is done by hand: we
//! match with the same expression minus that alternative, and when a match is a run of two or more
//! whitespace characters followed by a non-space, we give its last character back. That is exactly what
//! the backtracking engine does: `\s+(?!\S)` takes the longest whitespace run not followed by a
//! non-space, i.e. the whole run at the end of the text, or all but its last character elsewhere (the
//! last one then starts the next word, so `"a  b"` gives `"a"`, `" "`, `" b"`); a single whitespace
//! character before a non-space fails the lookahead and falls through to the final `\s+`.
//! An all-whitespace match can come only from the `\s+` alternative, since every other one needs a
//! letter, digit, apostrophe or symbol. (`fancy-regex` is not needed.)

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// GPT-2's pattern without the `\s+(?!\S)` alternative, which [`Gpt2Words`] applies by hand.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

static GPT2_REGEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(GPT2_PATTERN).expect("the GPT-2 pattern is a valid regex"));

/// How a BPE tokenizer cuts text into words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreTokenizer {
    /// GPT-2's regular expression (see the module documentation).
    #[default]
    Gpt2,
}

impl PreTokenizer {
    /// The words of `text`, in order; they concatenate back to `text`.
    pub fn words<'a>(&self, text: &'a str) -> Gpt2Words<'a> {
        match self {
            PreTokenizer::Gpt2 => Gpt2Words { text, pos: 0 },
        }
    }
}

/// Iterator over GPT-2 pre-tokens of a text.
#[derive(Clone, Debug)]
pub struct Gpt2Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Gpt2Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        // Every character is a letter, a number, whitespace or something else, so the pattern always
        // matches at `pos` itself.
        let m = GPT2_REGEX.find_at(self.text, self.pos).expect("the pattern matches any character");
        debug_assert_eq!(m.start(), self.pos);
        let mut end = m.end();
        let word = m.as_str();
        if end < self.text.len() && word.chars().all(char::is_whitespace) {
            // `\s+(?!\S)`: hand the last whitespace character to the next word, if one remains.
            let last = word.chars().next_back().expect("matches are non-empty");
            if word.len() > last.len_utf8() {
                end -= last.len_utf8();
            }
        }
        let word = &self.text[self.pos..end];
        self.pos = end;
        Some(word)
    }
}

/// Cuts `text` into pieces of about `target` bytes at places where GPT-2 pre-tokenization of the pieces
/// equals that of the whole, so the pieces can be pre-tokenized in parallel.
///
/// A cut goes right after a newline that has a non-space on both sides: that newline is a word on its
/// own (one whitespace character before a non-space) and no word can span it. Pieces depend only on the
/// text and `target`, never on the number of threads. A text without such places stays whole.
pub fn split_for_parallel(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut probe = target.max(1);
    while probe < bytes.len() {
        // A newline byte never occurs inside a multi-byte character, so `i` is a char boundary.
        let Some(off) = bytes[probe..].iter().position(|&b| b == b'\n') else { break };
        let newline = probe + off;
        let cut = newline + 1;
        let before = text[start..newline].chars().next_back();
        let after = text[cut..].chars().next();
        match (before, after) {
            (Some(b), Some(a)) if !b.is_whitespace() && !a.is_whitespace() => {
                pieces.push(&text[start..cut]);
                start = cut;
                probe = cut + target.max(1);
            }
            _ => probe = cut,
        }
    }
    if start < bytes.len() || pieces.is_empty() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<&str> {
        PreTokenizer::Gpt2.words(s).collect()
    }

    #[test]
    fn gpt2_examples() {
        // Checked against Hugging Face `tokenizers` ByteLevel(add_prefix_space=False).
        assert_eq!(
            words("Hello  world's\n\n  x  \t\ty 12 3\u{a0}z "),
            vec![
                "Hello", " ", " world", "'s", "\n\n ", " x", "  \t", "\t", "y", " 12", " 3", "\u{a0}", "z",
                " "
            ]
        );
        assert_eq!(words("I'm don't 'LL"), vec!["I", "'m", " don", "'t", " '", "LL"]);
        assert_eq!(words("  "), vec!["  "]);
        assert_eq!(words(" a"), vec![" a"]);
        assert_eq!(words("\na"), vec!["\n", "a"]);
        assert_eq!(words("a\t\n b"), vec!["a", "\t\n", " b"]);
        assert_eq!(words("x!!? y"), vec!["x", "!!?", " y"]);
        assert_eq!(words(""), Vec::<&str>::new());
    }

    #[test]
    fn parallel_pieces_cut_after_lone_newlines() {
        let text = "ab\ncd\n\nef\ngh";
        assert_eq!(split_for_parallel(text, 1), vec!["ab\n", "cd\n\nef\n", "gh"]);
        assert_eq!(split_for_parallel(text, 100), vec![text]);
        assert_eq!(split_for_parallel("", 4), vec![""]);
    }

    proptest! {
        #[test]
        fn words_concatenate_to_the_text(s in "[ a-c'0-9!\\n\\t\u{a0}é€😀]{0,40}") {
            prop_assert!(words(&s).iter().all(|w| !w.is_empty()));
            prop_assert_eq!(words(&s).concat(), s);
        }

        #[test]
        fn pieces_pre_tokenize_like_the_whole(s in "[ a'1!\\n]{0,60}", target in 1usize..20) {
            let pieces = split_for_parallel(&s, target);
            prop_assert_eq!(pieces.concat(), s.clone());
            let by_piece: Vec<&str> = pieces.iter().flat_map(|p| words(p)).collect();
            prop_assert_eq!(by_piece, words(&s));
        }
    }
}
