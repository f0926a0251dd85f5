//! SplitMix64, written out here so that generated datasets never change under a dependency bump.
//!
//! Steele, Lea & Flood, "Fast splittable pseudorandom number generators" (OOPSLA 2014), with the
//! constants of Vigna's reference `splitmix64.c`. Integer-only, so every platform gives the same
//! stream. Not for cryptography.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (a bijective 64-bit mixer).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream that starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for item `index` of stream `stream` under `seed`, so that each
    /// example is a pure function of `(seed, stream, index)`.
    pub fn for_index(seed: u64, stream: u64, index: u64) -> Self {
        Self::new(mix64(mix64(mix64(seed) ^ stream).wrapping_add(index)))
    }

    /// The next 64 random bits: `state += γ; return mix64(state)`.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `0..n` without modulo bias (rejects the top `2^64 mod n` values). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n; // = 2^64 mod n
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return x % n;
            }
        }
    }

    /// Uniform in `lo..=hi` (`lo ≤ hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::range({lo}, {hi})");
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64() {
        // splitmix64.c with x = 0: the first output is 0xE220A8397B1DCDAF.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges_cover_and_stay_inside() {
        let mut r = Rng::new(7);
        let mut seen = [0usize; 6];
        for _ in 0..6000 {
            seen[r.range(1, 6) as usize - 1] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(r.range(5, 5), 5);
        let _ = r.range(0, u64::MAX);
        let mut v: Vec<u32> = (0..10).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(Rng::for_index(1, 0, 0).next_u64(), Rng::for_index(1, 0, 1).next_u64());
        assert_ne!(Rng::for_index(1, 0, 0).next_u64(), Rng::for_index(1, 1, 0).next_u64());
    }
}
