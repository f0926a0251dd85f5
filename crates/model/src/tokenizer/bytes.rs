//! Bytes as printable characters (GPT-2's `bytes_to_unicode`), and a streaming UTF-8 decoder.
//!
//! Byte-level BPE works on raw bytes, but GPT-2's `vocab.json` and `merges.txt` are text files whose
//! tokens are separated by spaces and newlines. GPT-2 therefore writes every byte as one printable
//! character: the 188 bytes that already print as themselves in Latin-1 (`!`..`~`, `¡`..`¬`, `®`..`ÿ`)
//! keep their own code point, and the other 68 (controls, space, DEL, NBSP, soft hyphen) are moved, in
//! byte order, to U+0100, U+0101, ... So a space is `Ġ` (U+0120) and a newline is `Ċ` (U+010A).

use std::sync::LazyLock;

/// One past the largest code point the byte-level alphabet uses (U+0100 + 68 moved bytes).
const ALPHABET_END: usize = 0x100 + 68;

/// Does byte `b` print as itself in GPT-2's mapping?
fn prints_as_itself(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Byte -> character table of GPT-2's `bytes_to_unicode`.
static BYTE_TO_CHAR: LazyLock<[char; 256]> = LazyLock::new(|| {
    let mut table = ['\0'; 256];
    let mut moved = 0u32;
    for b in 0..=255u8 {
        table[b as usize] = if prints_as_itself(b) {
            char::from(b)
        } else {
            moved += 1;
            char::from_u32(0x100 + moved - 1).expect("U+0100..U+0143 are characters")
        };
    }
    table
});

/// Character -> byte table, the inverse of [`BYTE_TO_CHAR`], indexed by code point.
static CHAR_TO_BYTE: LazyLock<[Option<u8>; ALPHABET_END]> = LazyLock::new(|| {
    let mut table = [None; ALPHABET_END];
    for (b, &c) in BYTE_TO_CHAR.iter().enumerate() {
        table[c as usize] = Some(b as u8);
    }
    table
});

/// The printable character GPT-2 writes for byte `b`.
pub fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte that GPT-2's character `c` stands for, or `None` if `c` is not in the byte-level alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE.get(c as usize).copied().flatten()
}

/// Writes `bytes` in the byte-level alphabet, e.g. `b" hi\n"` -> `"ĠhiĊ"`.
pub fn bytes_to_token_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Reads a byte-level string back into bytes; `None` if a character is outside the alphabet.
pub fn token_string_to_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// The 256 bytes sorted by their byte-level character: the order of ids 0..256 in GPT-2's `vocab.json`,
/// and also the order in which Hugging Face's trainer numbers a byte-level alphabet (by code point).
pub fn bytes_in_gpt2_order() -> [u8; 256] {
    let mut order: [u8; 256] = std::array::from_fn(|b| b as u8);
    order.sort_by_key(|&b| byte_to_char(b));
    order
}

/// Turns a stream of byte chunks into text, holding back a character split across chunks.
///
/// A sampler decodes one token at a time, and a byte-level token may end in the middle of a UTF-8
/// character (an emoji is often two or three tokens). `push` returns only the text that is complete;
/// bytes that can never start a valid character become U+FFFD, as in `String::from_utf8_lossy`.
#[derive(Clone, Debug, Default)]
pub struct Utf8StreamDecoder {
    /// The undecided tail: at most 3 bytes of a character that may still be completed.
    pending: Vec<u8>,
}

impl Utf8StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and returns the text completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked by from_utf8"));
                    match e.error_len() {
                        // An invalid sequence: replace it and go on after it.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // A truncated character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// True if some bytes are waiting for the rest of their character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: a truncated character left over becomes U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_characters_of_gpt2() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xA0), 'ł');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        assert_eq!(byte_to_char(0x00), 'Ā');
        assert_eq!(char_to_byte('Ġ'), Some(b' '));
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(char_to_byte('\u{143}'), Some(0xAD));
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn mapping_is_a_bijection_onto_256_characters() {
        let mut chars: Vec<char> = (0..=255u8).map(byte_to_char).collect();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
    }

    #[test]
    fn gpt2_order_starts_with_printable_ascii() {
        let order = bytes_in_gpt2_order();
        assert_eq!(order[0], b'!');
        assert_eq!(order[93], b'~');
        assert_eq!(order[188], 0x00);
        assert_eq!(order[255], 0xAD);
    }

    proptest! {
        #[test]
        fn token_strings_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = bytes_to_token_string(&bytes);
            prop_assert_eq!(token_string_to_bytes(&s), Some(bytes));
        }

        #[test]
        fn stream_decoder_equals_lossy_decoding(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut dec = Utf8StreamDecoder::new();
            let mut text = String::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                text += &dec.push(&bytes[start..cut]);
                start = cut;
            }
            text += &dec.finish();
            prop_assert_eq!(text, String::from_utf8_lossy(&bytes).into_owned());
        }

        #[test]
        fn stream_decoder_of_valid_text_yields_whole_characters(s in "\\PC{0,20}") {
            prop_assume!(!s.contains(char::REPLACEMENT_CHARACTER));
            let mut dec = Utf8StreamDecoder::new();
            let mut text = String::new();
            for b in s.as_bytes() {
                let piece = dec.push(&[*b]);
                prop_assert!(!piece.contains(char::REPLACEMENT_CHARACTER));
                text += &piece;
            }
            prop_assert!(!dec.has_pending());
            prop_assert_eq!(text, s);
        }
    }
}
