//! Logits processors: pure functions on one row of logits (one per vocabulary entry).
//!
//! A processor removes a token by setting its logit to [`MASKED`] (−∞), so that the softmax of the
//! row is the renormalised distribution over the tokens left. Orderings are total: logits compare by
//! value, ties towards the lower token id, so every processor is deterministic.
//! [`crate::choose`] composes them in the documented order.

/// The logit of a removed token.
pub const MASKED: f32 = f32::NEG_INFINITY;

/// A set of token ids, as a bit per vocabulary entry (the tokens a repetition penalty applies to).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSet {
    words: Vec<u64>,
}

impl TokenSet {
    /// An empty set for ids below `vocab_size`.
    pub fn new(vocab_size: usize) -> Self {
        TokenSet { words: vec![0; vocab_size.div_ceil(64)] }
    }

    /// Removes every id (keeps the memory).
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds `id`.
    ///
    /// # Panics
    /// If `id` is not below the vocabulary size given to [`TokenSet::new`] (rounded up to 64).
    #[inline]
    pub fn insert(&mut self, id: u32) {
        self.words[id as usize / 64] |= 1 << (id % 64);
    }

    /// Whether `id` is in the set.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    /// The ids in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| (0..64).filter(move |b| w >> b & 1 == 1).map(move |b| (i * 64 + b) as u32))
    }
}

/// CTRL's repetition penalty (Keskar et al. 2019), as Hugging Face applies it: for each token in
/// `seen` (once, however often it occurred), z ← z / θ if z > 0, else z · θ.
pub fn repetition_penalty(logits: &mut [f32], seen: &TokenSet, penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for id in seen.iter() {
        if let Some(z) = logits.get_mut(id as usize) {
            *z = if *z > 0.0 { *z / penalty } else { *z * penalty };
        }
    }
}

/// z ← z / T (T > 0; greedy decoding, T = 0, never reaches here).
pub fn temperature(logits: &mut [f32], t: f32) {
    if t != 1.0 {
        logits.iter_mut().for_each(|z| *z /= t);
    }
}

/// `a` before `b` when `a`'s logit is larger, or equal with a lower id: the processors' total order.
#[inline]
fn before(logits: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b))
}

/// Fills `idx` with the ids whose logits are not masked.
fn unmasked(logits: &[f32], idx: &mut Vec<u32>) {
    idx.clear();
    idx.extend((0..logits.len() as u32).filter(|&i| logits[i as usize] != MASKED));
}

/// Keeps the `k` largest logits (exactly k: ties at the boundary go to the lower ids); 0 is off.
/// `idx` is scratch (no allocation once its capacity reaches the vocabulary size).
pub fn top_k(logits: &mut [f32], k: usize, idx: &mut Vec<u32>) {
    if k == 0 {
        return;
    }
    unmasked(logits, idx);
    if idx.len() <= k {
        return;
    }
    // Partition: idx[..k] are the k first in the total order (O(V), no full sort).
    idx.select_nth_unstable_by(k - 1, |&a, &b| before(logits, a, b));
    for &i in &idx[k..] {
        logits[i as usize] = MASKED;
    }
}

/// Nucleus sampling (Holtzman et al. 2020): keeps the smallest prefix of the tokens sorted by
/// probability (most likely first) whose total probability reaches `p`; 1 is off.
/// `idx` and `probs` are scratch.
pub fn top_p(logits: &mut [f32], p: f32, idx: &mut Vec<u32>, probs: &mut Vec<f64>) {
    if p >= 1.0 {
        return;
    }
    unmasked(logits, idx);
    if idx.len() <= 1 {
        return;
    }
    idx.sort_unstable_by(|&a, &b| before(logits, a, b));
    // Unnormalised probabilities e_i = exp(z_i − z_max) in sorted order; keep while Σ e < p · Σ all.
    let z_max = logits[idx[0] as usize] as f64;
    probs.clear();
    probs.extend(idx.iter().map(|&i| (logits[i as usize] as f64 - z_max).exp()));
    let total: f64 = probs.iter().sum();
    let target = p as f64 * total;
    let mut mass = 0.0;
    let mut keep = idx.len();
    for (m, &e) in probs.iter().enumerate() {
        mass += e;
        if mass >= target {
            keep = m + 1;
            break;
        }
    }
    for &i in &idx[keep..] {
        logits[i as usize] = MASKED;
    }
}

/// Min-p sampling (Nguyen et al. 2024): drops tokens with probability below `min_p · p_max`, i.e.
/// with exp(z − z_max) < min_p. The threshold is relative to the top token, so it is the same
/// before or after truncation's renormalisation. 0 is off.
pub fn min_p(logits: &mut [f32], min_p: f32) {
    if min_p <= 0.0 {
        return;
    }
    let z_max = logits.iter().copied().fold(MASKED, f32::max) as f64;
    for z in logits.iter_mut() {
        if ((*z as f64 - z_max).exp()) < min_p as f64 {
            *z = MASKED;
        }
    }
}

/// The id of the largest logit, ties to the lowest id (greedy decoding). `None` if the row is
/// empty or holds a NaN.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &z) in logits.iter().enumerate() {
        if z.is_nan() {
            return None;
        }
        if best.is_none_or(|b| z > logits[b]) {
            best = Some(i);
        }
    }
    best
}

/// Draws a token from softmax(logits) by inverse CDF with the uniform `u` in [0, 1), and returns it
/// with its log-probability. Cumulative sums run in id order, so the choice is a pure function of
/// (logits, u). `None` when no logit is finite or one is NaN or +∞. `probs` is scratch.
///
/// i = min { i : Σ_{j ≤ i} e_j > u · Σ_j e_j },   e_j = exp(z_j − z_max),   log p_i = z_i − z_max − ln Σ e
pub fn draw(logits: &[f32], u: f64, probs: &mut Vec<f64>) -> Option<(usize, f64)> {
    let mut z_max = MASKED;
    for &z in logits {
        if z.is_nan() || z == f32::INFINITY {
            return None;
        }
        z_max = z_max.max(z);
    }
    if z_max == MASKED {
        return None;
    }
    let z_max = z_max as f64;
    probs.clear();
    probs.extend(logits.iter().map(|&z| (z as f64 - z_max).exp()));
    let total: f64 = probs.iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &e) in probs.iter().enumerate() {
        if e > 0.0 {
            cum += e;
            last = i;
            if cum > target {
                break;
            }
        }
    }
    // `last` is the first token past the target, or the last positive one if rounding left
    // the sum short of it.
    Some((last, logits[last] as f64 - z_max - total.ln()))
}

/// log softmax(z / T)[token] over the full row, in f64 (the training policy's log-probability).
pub fn log_softmax_at(logits: &[f32], token: usize, inv_t: f64) -> f64 {
    log_softmax_from(logits[token], log_normalizer(logits.iter().copied(), inv_t), inv_t)
}

/// The two terms of `log Σ_v exp(z_v / T)` that [`log_softmax_at`] subtracts, in its order:
/// `(m, ln Σ_v exp(z_v / T − m))` with `m = max_v z_v / T`.
pub(crate) fn log_normalizer(logits: impl Iterator<Item = f32> + Clone, inv_t: f64) -> (f64, f64) {
    let z_max = logits.clone().fold(f32::NEG_INFINITY, f32::max) as f64 * inv_t;
    let sum: f64 = logits.map(|z| (z as f64 * inv_t - z_max).exp()).sum();
    (z_max, sum.ln())
}

/// `z / T − m − ln Σ`, the log-probability of a logit `z` given its row's [`log_normalizer`].
pub(crate) fn log_softmax_from(z: f32, (z_max, ln_sum): (f64, f64), inv_t: f64) -> f64 {
    z as f64 * inv_t - z_max - ln_sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row() -> impl Strategy<Value = Vec<f32>> {
        // Logits on a coarse grid, so that ties happen and the tie rules get exercised.
        prop::collection::vec((-40i32..40).prop_map(|z| z as f32 * 0.25), 1..80)
    }

    fn softmax(z: &[f32]) -> Vec<f64> {
        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// Ids sorted most likely first, ties to the lower id.
    fn ranked(z: &[f32]) -> Vec<usize> {
        let mut r: Vec<usize> = (0..z.len()).collect();
        r.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
        r
    }

    proptest! {
        #[test]
        fn top_k_keeps_exactly_the_k_most_likely(z in row(), k in 1usize..90) {
            let mut out = z.clone();
            top_k(&mut out, k, &mut Vec::new());
            let r = ranked(&z);
            for (rank, &i) in r.iter().enumerate() {
                if rank < k {
                    prop_assert_eq!(out[i], z[i]);
                } else {
                    prop_assert_eq!(out[i], MASKED);
                }
            }
        }

        #[test]
        fn top_k_samples_never_leave_the_top_k(z in row(), k in 1usize..10, u in 0.0f64..1.0) {
            let mut out = z.clone();
            top_k(&mut out, k, &mut Vec::new());
            let (tok, _) = draw(&out, u, &mut Vec::new()).unwrap();
            let rank = ranked(&z).iter().position(|&i| i == tok).unwrap();
            prop_assert!(rank < k, "drew rank {} with k = {}", rank, k);
        }

        #[test]
        fn top_p_keeps_the_smallest_prefix_reaching_p(z in row(), p in 0.01f32..0.999) {
            let mut out = z.clone();
            top_p(&mut out, p, &mut Vec::new(), &mut Vec::new());
            let probs = softmax(&z);
            let r = ranked(&z);
            let kept = r.iter().take_while(|&&i| out[i] != MASKED).count();
            // A prefix: nothing kept after the first removed.
            prop_assert!(r[kept..].iter().all(|&i| out[i] == MASKED));
            prop_assert!(kept >= 1);
            let mass: f64 = r[..kept].iter().map(|&i| probs[i]).sum();
            let without_last = mass - probs[r[kept - 1]];
            prop_assert!(mass >= p as f64 - 1e-9, "kept mass {} < p {}", mass, p);
            prop_assert!(without_last < p as f64 + 1e-9, "a shorter prefix ({}) already reaches {}", without_last, p);
        }

        #[test]
        fn min_p_threshold_is_relative_to_the_top_probability(z in row(), m in 0.0f32..1.0) {
            let mut out = z.clone();
            min_p(&mut out, m);
            let probs = softmax(&z);
            let p_max = probs.iter().copied().fold(0.0, f64::max);
            for i in 0..z.len() {
                let expect_kept = probs[i] >= m as f64 * p_max;
                // Away from the boundary, the two roundings agree.
                if (probs[i] - m as f64 * p_max).abs() > 1e-12 {
                    prop_assert_eq!(out[i] != MASKED, expect_kept);
                }
            }
            prop_assert!(out.iter().any(|&v| v != MASKED), "the top token always survives");
        }

        #[test]
        fn draw_returns_a_consistent_log_probability(z in row(), u in 0.0f64..1.0) {
            let (tok, lp) = draw(&z, u, &mut Vec::new()).unwrap();
            prop_assert!((lp - softmax(&z)[tok].ln()).abs() < 1e-9);
            prop_assert!((lp - log_softmax_at(&z, tok, 1.0)).abs() < 1e-9);
        }

        #[test]
        fn draw_is_monotone_in_u(z in row(), u in 0.0f64..1.0, v in 0.0f64..1.0) {
            // Inverse CDF: a larger uniform never picks an earlier id.
            let (a, _) = draw(&z, u.min(v), &mut Vec::new()).unwrap();
            let (b, _) = draw(&z, u.max(v), &mut Vec::new()).unwrap();
            prop_assert!(a <= b);
        }
    }

    #[test]
    fn repetition_penalty_matches_ctrl_once_per_token() {
        let mut z = vec![2.0, -2.0, 1.0, 0.0];
        let mut seen = TokenSet::new(4);
        for id in [0, 1, 0, 3] {
            seen.insert(id);
        }
        repetition_penalty(&mut z, &seen, 2.0);
        assert_eq!(z, vec![1.0, -4.0, 1.0, 0.0]);
    }

    #[test]
    fn token_set_inserts_and_lists_in_order() {
        let mut s = TokenSet::new(130);
        for id in [129, 3, 64, 3] {
            s.insert(id);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 129]);
        assert!(s.contains(64) && !s.contains(65) && !s.contains(10_000));
        s.clear();
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn masked_rows_and_nans_draw_nothing() {
        assert_eq!(draw(&[MASKED, MASKED], 0.5, &mut Vec::new()), None);
        assert_eq!(draw(&[0.0, f32::NAN], 0.5, &mut Vec::new()), None);
        assert_eq!(argmax(&[0.0, f32::NAN]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
    }

    #[test]
    fn temperature_divides() {
        let mut z = vec![1.0, -3.0];
        temperature(&mut z, 0.5);
        assert_eq!(z, vec![2.0, -6.0]);
    }
}
