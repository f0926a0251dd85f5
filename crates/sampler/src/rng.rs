//! Counter-based random streams: one per (seed, prompt id, sample index), indexed by decode step.
//!
//! A sequential generator shared by a batch would hand out its numbers in whatever order the
//! sequences happen to be processed, so a completion would depend on the batch size, the batch's
//! order and the thread count. Instead every completion owns a stream, and the uniform used at
//! step `t` is a pure function of `(seed, prompt id, sample index, t)`:
//!
//! ```text
//! key      = absorb(absorb(absorb(mix(seed), prompt_id), sample), STREAM_TAG)
//! u(t)     = top 53 bits of mix(key + (t + 1) * GAMMA) / 2^53          in [0, 1)
//! ```
//!
//! `mix` is the SplitMix64 output function (Steele, Lea & Flood 2014; the constants are Stafford's
//! "Mix13"), and `key + (t + 1) * GAMMA` is SplitMix64's Weyl sequence, so each stream *is* a
//! SplitMix64 generator started at `key`: it passes BigCrush and PractRand as a sequential generator.
//! Keys are 64-bit hashes of the triple, so two streams overlap only if their keys fall within one
//! stream length of each other on the Weyl sequence: with n streams of L steps, probability about
//! n² L / 2⁶⁴ (1e-7 for a million streams of 10⁴ steps).

use serde::{Deserialize, Serialize};

/// SplitMix64's increment, the odd integer closest to 2⁶⁴ / φ.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Separates sampling streams from any other use of the same (seed, prompt, sample) triple.
const STREAM_TAG: u64 = 0x7067_6c6d_2d73_616d; // "pglm-sam" in ASCII

/// SplitMix64's finaliser: a bijection of u64 whose every output bit depends on every input bit.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds one word into a running hash: h' = mix(h ^ mix(x + GAMMA)).
#[inline]
fn absorb(h: u64, x: u64) -> u64 {
    mix(h ^ mix(x.wrapping_add(GAMMA)))
}

/// The random stream of one completion: a key derived from (seed, prompt id, sample index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    key: u64,
}

impl Stream {
    /// The stream of sample `sample` of the prompt with id `prompt_id`, under `seed`.
    pub fn new(seed: u64, prompt_id: u64, sample: u64) -> Self {
        Stream { key: absorb(absorb(absorb(mix(seed), prompt_id), sample), STREAM_TAG) }
    }

    /// The raw 64-bit word at `step` (SplitMix64's output number `step`).
    #[inline]
    pub fn word(&self, step: u64) -> u64 {
        mix(self.key.wrapping_add(step.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// A uniform number in `[0, 1)` for `step`, with 53 random bits (every f64 multiple of 2⁻⁵³).
    #[inline]
    pub fn uniform(&self, step: u64) -> f64 {
        (self.word(step) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pearson's statistic of observed counts against equal expected counts.
    fn chi_square(counts: &[u64]) -> f64 {
        let n: u64 = counts.iter().sum();
        let e = n as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    #[test]
    fn uniform_is_in_unit_interval_and_pure() {
        let s = Stream::new(7, 3, 1);
        for t in 0..10_000 {
            let u = s.uniform(t);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, Stream::new(7, 3, 1).uniform(t));
        }
    }

    #[test]
    fn one_stream_is_uniform_over_steps() {
        // 64 bins, 64k draws: chi-square with 63 degrees of freedom; the 0.999 quantile is 103.4.
        let s = Stream::new(42, 0, 0);
        let mut counts = [0u64; 64];
        for t in 0..65_536 {
            counts[(s.uniform(t) * 64.0) as usize] += 1;
        }
        assert!(chi_square(&counts) < 103.4, "chi2 = {}", chi_square(&counts));
    }

    #[test]
    fn neighbouring_streams_are_uniform_at_a_fixed_step() {
        // The first draw of 64k (prompt, sample) pairs: nearby ids must not give correlated starts.
        let mut counts = [0u64; 64];
        for p in 0..256 {
            for j in 0..256 {
                counts[(Stream::new(1, p, j).uniform(0) * 64.0) as usize] += 1;
            }
        }
        assert!(chi_square(&counts) < 103.4, "chi2 = {}", chi_square(&counts));
    }

    #[test]
    fn streams_differ_by_seed_prompt_and_sample() {
        let base = Stream::new(1, 2, 3);
        for other in [Stream::new(0, 2, 3), Stream::new(1, 3, 3), Stream::new(1, 2, 4), Stream::new(1, 3, 2)]
        {
            assert_ne!(base, other);
            assert_ne!(base.word(0), other.word(0));
        }
    }

    #[test]
    fn successive_draws_are_uncorrelated() {
        // Lag-1 serial correlation of 64k draws: |r| < 4 / sqrt(n) = 0.016 with overwhelming probability.
        let s = Stream::new(9, 9, 9);
        let n = 65_536;
        let u: Vec<f64> = (0..n).map(|t| s.uniform(t) - 0.5).collect();
        let r = u.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / u.iter().map(|x| x * x).sum::<f64>();
        assert!(r.abs() < 4.0 / (n as f64).sqrt(), "lag-1 correlation {r}");
    }
}
