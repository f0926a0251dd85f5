//! Training a byte-level BPE vocabulary on a corpus (Sennrich et al. 2016, byte-level as in GPT-2).
//!
//! 1. Pre-tokenize the corpus and count each distinct word (in parallel, over fixed pieces).
//! 2. Write each word as byte tokens and count adjacent pairs, weighting each by its word's count
//!    (in parallel, over fixed chunks of words); remember which words hold each pair.
//! 3. Repeatedly merge the most frequent pair `(a, b)` into a new token `ab`, touching only the words
//!    that hold it, and update the counts by the pairs each such word lost and gained.
//!
//! Ties: among pairs of equal count the smallest `(a, b)` by ids wins, the rule of Hugging Face's
//! `BpeTrainer`. With our id layout (specials first, then the bytes in order of their byte-level
//! character, then merges in order) ids coincide with that trainer's when it is given the full
//! byte-level initial alphabet, so both learn the same merges (a test checks this on the fixture).
//! Every parallel step only sums integers or maps words independently, so the result does not depend
//! on the number of threads.

use super::bpe::{BpeTokenizer, Pair, PairMap, SpecialIds};
use super::bytes::{bytes_in_gpt2_order, bytes_to_token_string};
use super::error::{Result, TokenizerError};
use super::pretokenize::{PreTokenizer, split_for_parallel};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// Bytes of corpus per parallel pre-tokenization piece.
const PIECE_BYTES: usize = 1 << 16;
/// A word after a merge, and the change of each pair count it causes.
type WordMerge = (Vec<u32>, Vec<(Pair, i64)>);

/// Words per parallel pair-counting chunk.
const WORD_CHUNK: usize = 4096;
/// Below this many words to update, a merge step runs serially (threads cost more than they save).
const PARALLEL_MERGE_MIN: usize = 512;

/// Settings of [`BpeTokenizer::train`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpeTrainConfig {
    /// Final vocabulary size: special tokens + 256 bytes + merges. Training stops earlier if no pair
    /// reaches `min_frequency`.
    pub vocab_size: usize,
    /// A pair must occur at least this often (counting word frequencies) to be merged.
    pub min_frequency: u64,
    /// Padding token, if any.
    pub pad: Option<String>,
    /// Beginning-of-sequence token, if any.
    pub bos: Option<String>,
    /// End-of-sequence token, if any (may equal `bos`, as GPT-2's `<|endoftext|>`).
    pub eos: Option<String>,
}

impl Default for BpeTrainConfig {
    fn default() -> Self {
        Self {
            vocab_size: 4096,
            min_frequency: 2,
            pad: Some("<|pad|>".into()),
            bos: Some("<|bos|>".into()),
            eos: Some("<|eos|>".into()),
        }
    }
}

impl BpeTokenizer {
    /// Learns a byte-level BPE vocabulary on `texts` with GPT-2 pre-tokenization. Each text is
    /// pre-tokenized on its own (no word spans two texts). Special tokens take the first ids, in the
    /// order pad, bos, eos (a name given twice gets one id).
    pub fn train<S: AsRef<str> + Sync>(texts: &[S], config: &BpeTrainConfig) -> Result<Self> {
        let pre = PreTokenizer::Gpt2;
        // Distinct special names in the order pad, bos, eos; each role's id is its name's index.
        let roles = [&config.pad, &config.bos, &config.eos];
        let mut special_names: Vec<&str> = Vec::new();
        let mut role_ids = [None; 3];
        for (role, name) in roles.into_iter().enumerate() {
            let Some(name) = name.as_deref() else { continue };
            if name.is_empty() {
                return Err(TokenizerError::BadConfig("a special token is the empty string".into()));
            }
            let id = special_names.iter().position(|&n| n == name).unwrap_or_else(|| {
                special_names.push(name);
                special_names.len() - 1
            });
            role_ids[role] = Some(id as u32);
        }
        let [pad, bos, eos] = role_ids;
        let specials = SpecialIds { pad, bos, eos };
        let n_special = special_names.len();
        if config.vocab_size < n_special + 256 {
            return Err(TokenizerError::BadConfig(format!(
                "vocab_size {} is below {n_special} special tokens + 256 bytes",
                config.vocab_size
            )));
        }

        // Ids: specials, then bytes in byte-level character order, then merges.
        let mut tokens: Vec<Vec<u8>> = special_names.iter().map(|s| s.as_bytes().to_vec()).collect();
        let byte_order = bytes_in_gpt2_order();
        let mut byte_id = [0u32; 256];
        for (i, &b) in byte_order.iter().enumerate() {
            byte_id[b as usize] = (n_special + i) as u32;
            tokens.push(vec![b]);
        }
        // Only learned tokens can be reused by a later merge that spells the same bytes.
        let mut learned: HashMap<Vec<u8>, u32> = tokens[n_special..]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), (n_special + i) as u32))
            .collect();

        let word_counts = count_words(texts, pre);
        let (mut words, counts): (Vec<Vec<u32>>, Vec<u64>) = word_counts
            .into_iter()
            .map(|(w, c)| (w.bytes().map(|b| byte_id[b as usize]).collect(), c))
            .unzip();
        let (mut pair_counts, mut where_) = count_pairs(&words, &counts);
        let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
            pair_counts.iter().filter(|&(_, &c)| c > 0).map(|(&p, &c)| (c, Reverse(p))).collect();

        let mut merges: Vec<Pair> = Vec::new();
        while tokens.len() < config.vocab_size {
            let Some((count, Reverse(pair))) = heap.pop() else { break };
            // Counts only fall for pairs already in the heap, so a stale entry is re-queued with its
            // current count; the max then is exact.
            let current = pair_counts.get(&pair).copied().unwrap_or(0);
            if count != current {
                if current > 0 {
                    heap.push((current, Reverse(pair)));
                }
                continue;
            }
            if (count as u64) < config.min_frequency.max(1) {
                break;
            }
            let bytes = [tokens[pair.0 as usize].as_slice(), tokens[pair.1 as usize].as_slice()].concat();
            let merged = *learned.entry(bytes.clone()).or_insert_with(|| {
                tokens.push(bytes);
                (tokens.len() - 1) as u32
            });
            merges.push(pair);

            let mut holders = where_.remove(&pair).unwrap_or_default();
            holders.sort_unstable();
            holders.dedup();
            let merge_one = |&w: &u32| merge_in_word(&words[w as usize], pair, merged).map(|r| (w, r));
            let updates: Vec<(u32, WordMerge)> = if holders.len() >= PARALLEL_MERGE_MIN {
                holders.par_iter().filter_map(merge_one).collect()
            } else {
                holders.iter().filter_map(merge_one).collect()
            };
            let mut touched: Vec<Pair> = Vec::new();
            for (w, (new_word, deltas)) in updates {
                words[w as usize] = new_word;
                for (p, d) in deltas {
                    *pair_counts.entry(p).or_insert(0) += d * counts[w as usize] as i64;
                    if d > 0 {
                        where_.entry(p).or_default().push(w);
                        touched.push(p);
                    }
                }
            }
            pair_counts.remove(&pair);
            touched.sort_unstable();
            touched.dedup();
            for p in touched {
                let c = pair_counts[&p];
                if c > 0 {
                    heap.push((c, Reverse(p)));
                }
            }
        }

        let names: Vec<String> = tokens.iter().map(|t| bytes_to_token_string(t)).collect();
        let lines: Vec<String> =
            merges.iter().map(|&(a, b)| format!("{} {}", names[a as usize], names[b as usize])).collect();
        let label = Path::new("<trained>");
        let lines = lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str()));
        Self::from_named_parts(pre, names, lines, specials, label, label)
    }
}

/// Distinct pre-token words of `texts` with their counts, sorted by word (so ids are deterministic).
fn count_words<S: AsRef<str> + Sync>(texts: &[S], pre: PreTokenizer) -> Vec<(String, u64)> {
    let pieces: Vec<&str> = texts.iter().flat_map(|t| split_for_parallel(t.as_ref(), PIECE_BYTES)).collect();
    let merged = pieces
        .par_iter()
        .map(|piece| {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for word in pre.words(piece) {
                *counts.entry(word).or_insert(0) += 1;
            }
            counts
        })
        .reduce(HashMap::new, |a, b| if a.len() >= b.len() { merge_into(a, b) } else { merge_into(b, a) });
    let mut words: Vec<(String, u64)> = merged.into_iter().map(|(w, c)| (w.to_owned(), c)).collect();
    words.sort_unstable();
    words
}

/// Adds the counts of `small` into `big`.
fn merge_into<'a>(mut big: HashMap<&'a str, u64>, small: HashMap<&'a str, u64>) -> HashMap<&'a str, u64> {
    for (w, c) in small {
        *big.entry(w).or_insert(0) += c;
    }
    big
}

/// Weighted counts of adjacent pairs, and for each pair the indices of the words holding it.
fn count_pairs(words: &[Vec<u32>], counts: &[u64]) -> (PairMap<i64>, PairMap<Vec<u32>>) {
    let chunk_maps: Vec<(PairMap<i64>, PairMap<Vec<u32>>)> = words
        .par_chunks(WORD_CHUNK)
        .enumerate()
        .map(|(chunk, ws)| {
            let mut pc = PairMap::default();
            let mut wh: PairMap<Vec<u32>> = PairMap::default();
            for (k, word) in ws.iter().enumerate() {
                let w = (chunk * WORD_CHUNK + k) as u32;
                for p in word.windows(2) {
                    let pair = (p[0], p[1]);
                    *pc.entry(pair).or_insert(0) += counts[w as usize] as i64;
                    let holders = wh.entry(pair).or_default();
                    if holders.last() != Some(&w) {
                        holders.push(w);
                    }
                }
            }
            (pc, wh)
        })
        .collect();
    // Reduce in chunk order, so each holder list comes out sorted.
    let mut pair_counts = PairMap::default();
    let mut where_: PairMap<Vec<u32>> = PairMap::default();
    for (pc, wh) in chunk_maps {
        for (p, c) in pc {
            *pair_counts.entry(p).or_insert(0) += c;
        }
        for (p, ws) in wh {
            where_.entry(p).or_default().extend(ws);
        }
    }
    (pair_counts, where_)
}

/// Merges every `pair` in `word` left to right into `merged`; returns the new word and the change of
/// each adjacent-pair count it causes, or `None` if the word no longer holds the pair.
///
/// For an occurrence `x a b y` -> `x ab y`: (x,a), (a,b), (b,y) lose one and (x,ab), (ab,y) gain one,
/// where `x` is the symbol already written (perhaps itself a fresh `ab`).
fn merge_in_word(word: &[u32], pair: Pair, merged: u32) -> Option<WordMerge> {
    let (a, b) = pair;
    if !word.windows(2).any(|p| p[0] == a && p[1] == b) {
        return None;
    }
    let mut out = Vec::with_capacity(word.len());
    let mut deltas: Vec<(Pair, i64)> = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
            if let Some(&x) = out.last() {
                deltas.push(((x, a), -1));
                deltas.push(((x, merged), 1));
            }
            deltas.push(((a, b), -1));
            if let Some(&y) = word.get(i + 2) {
                deltas.push(((b, y), -1));
                deltas.push(((merged, y), 1));
            }
            out.push(merged);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    // Net the changes per pair, so a pair gained and lost again is not reported as gained.
    deltas.sort_unstable_by_key(|&(p, _)| p);
    let mut net: Vec<(Pair, i64)> = Vec::with_capacity(deltas.len());
    for (p, d) in deltas {
        match net.last_mut() {
            Some((q, e)) if *q == p => *e += d,
            _ => net.push((p, d)),
        }
    }
    net.retain(|&(p, d)| d != 0 && p != pair);
    Some((out, net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair_multiset(word: &[u32]) -> PairMap<i64> {
        let mut m = PairMap::default();
        for p in word.windows(2) {
            *m.entry((p[0], p[1])).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn merge_deltas_equal_the_change_of_pair_counts() {
        let cases: [&[u32]; 5] =
            [&[1, 1, 1, 1], &[1, 2, 1, 2], &[3, 1, 2, 1, 2, 1, 2, 4], &[1, 1, 1], &[2, 1, 1, 2]];
        for (word, pair) in cases.into_iter().zip([(1, 1), (1, 2), (1, 2), (1, 1), (1, 1)]) {
            let (out, deltas) = merge_in_word(word, pair, 9).unwrap();
            let mut expect = pair_multiset(&out);
            for (p, c) in pair_multiset(word) {
                *expect.entry(p).or_insert(0) -= c;
            }
            expect.retain(|&p, c| *c != 0 && p != pair);
            let got: PairMap<i64> = deltas.into_iter().collect();
            assert_eq!(got, expect, "word {word:?} pair {pair:?}");
        }
        assert!(merge_in_word(&[1, 2], (2, 1), 9).is_none());
    }

    #[test]
    fn learns_the_most_frequent_pairs_first() {
        let cfg = BpeTrainConfig { vocab_size: 256 + 3 + 2, ..Default::default() };
        let t = BpeTokenizer::train(&["aaab aaab aaab xy"], &cfg).unwrap();
        let learned: Vec<&str> = (259..t.vocab_size() as u32).map(|i| t.id_to_token(i).unwrap()).collect();
        // (a,a) occurs 6 times, then (aa,a)/(a,b)/(Ġ,a)... (Ġ,a) and (a,b) tie with (aa, a) at 3.
        assert_eq!(learned[0], "aa");
        assert_eq!(t.specials(), SpecialIds { pad: Some(0), bos: Some(1), eos: Some(2) });
        assert_eq!(t.id_to_token(0), Some("<|pad|>"));
    }

    #[test]
    fn stops_below_min_frequency_and_rejects_small_vocabularies() {
        let cfg = BpeTrainConfig { vocab_size: 10_000, min_frequency: 2, ..Default::default() };
        let t = BpeTokenizer::train(&["abcdef"], &cfg).unwrap();
        assert_eq!(t.num_merges(), 0);
        let cfg = BpeTrainConfig { vocab_size: 100, ..Default::default() };
        assert!(matches!(BpeTokenizer::train(&["x"], &cfg), Err(TokenizerError::BadConfig(_))));
    }
}
