//! Outcome advantages: one number per completion, from the group's rewards.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// What GRPO divides the centred reward by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdScale {
    /// The standard deviation of the prompt's group (GRPO, TRL `scale_rewards="group"`).
    Group,
    /// The standard deviation of all rewards of the batch (TRL `scale_rewards="batch"`).
    Batch,
    /// No division: `A = r − mean_group` (Dr. GRPO, TRL `scale_rewards="none"`).
    None,
}

/// Panics unless `len` rewards split into groups of `group`.
fn check_groups(op: &str, len: usize, group: usize) {
    assert!(group >= 1, "{op}: group size must be at least 1");
    assert!(len.is_multiple_of(group), "{op}: {len} rewards do not split into groups of {group}");
}

/// The arithmetic mean, summed in order; 0 for an empty slice.
fn mean(x: &[f64]) -> f64 {
    if x.is_empty() { 0.0 } else { x.iter().sum::<f64>() / x.len() as f64 }
}

/// The sample standard deviation with Bessel's correction (`n − 1`), as `torch.std`; 0 when `n < 2`.
fn std_bessel(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Whether every reward of a group is the same: such a group carries no learning signal, and its
/// advantages are set to exactly 0 (rounding in the mean would otherwise leave ~1e-17 residues,
/// which the GRPO division by `std + eps` could blow up when `eps = 0`).
fn all_equal(x: &[f64]) -> bool {
    x.iter().all(|&v| v == x[0])
}

/// RLOO (Ahmadian et al. 2024, eq. for the leave-one-out baseline):
/// `A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j` within each group of `group` completions.
///
/// The baseline of sample `i` uses only the other samples, so it is independent of `y_i` and the
/// estimate stays unbiased. Equivalent to `G/(G−1) · (r_i − mean_g)` (verl's form).
///
/// # Panics
/// If `group < 2` (there is no "other" sample) or the rewards do not split into groups.
pub fn rloo(rewards: &[f64], group: usize) -> Vec<f64> {
    check_groups("rloo", rewards.len(), group);
    assert!(group >= 2, "rloo: needs a group of at least 2 completions, got {group}");
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        if all_equal(g) {
            out.extend(std::iter::repeat_n(0.0, g.len()));
            continue;
        }
        let total: f64 = g.iter().sum();
        // b_i = (Σ_j r_j − r_i) / (G − 1)
        out.extend(g.iter().map(|&r| r - (total - r) / (group - 1) as f64));
    }
    out
}

/// GRPO's group z-score (Shao et al. 2024, outcome supervision; TRL `_compute_advantages`):
/// `A_i = (r_i − mean_g) / (σ + eps)` with `σ` per [`StdScale`] (Bessel-corrected, as `torch.std`),
/// or `A_i = r_i − mean_g` for [`StdScale::None`] (Dr. GRPO, where `eps` is unused).
///
/// A group whose rewards are all equal gets exactly 0 (in particular a group of one completion,
/// whose own reward is its mean; verl instead uses mean 0 and std 1 there, i.e. `A = r`).
/// TRL uses `eps = 1e-4`, verl `1e-6`.
///
/// # Panics
/// If the rewards do not split into groups of `group`.
pub fn grpo(rewards: &[f64], group: usize, scale: StdScale, eps: f64) -> Vec<f64> {
    check_groups("grpo", rewards.len(), group);
    let batch_std = std_bessel(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        if all_equal(g) {
            out.extend(std::iter::repeat_n(0.0, g.len()));
            continue;
        }
        let m = mean(g);
        let denom = match scale {
            StdScale::Group => std_bessel(g) + eps,
            StdScale::Batch => batch_std + eps,
            StdScale::None => 1.0,
        };
        out.extend(g.iter().map(|&r| (r - m) / denom));
    }
    out
}

/// `r_i − mean_g`: the group-mean baseline (nanochat, Dr. GRPO, and the scores REINFORCE++-baseline
/// starts from). Groups of equal rewards give exactly 0.
///
/// # Panics
/// If the rewards do not split into groups of `group`.
pub fn group_centered(rewards: &[f64], group: usize) -> Vec<f64> {
    grpo(rewards, group, StdScale::None, 0.0)
}

/// A baseline carried across batches: an exponential moving average of the mean reward.
///
/// Used as `A_i = r_i − b` where `b` is the value **before** the current batch, so `b` never
/// depends on the samples it is subtracted from and REINFORCE stays unbiased (Williams 1992 allows
/// any baseline that does not depend on the action). The first batch has no history and uses
/// `b = 0`; afterwards `b ← decay·b + (1 − decay)·mean(r)`, the first update setting `b = mean(r)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MovingBaseline {
    /// The current baseline; `None` until the first batch has been seen.
    pub value: Option<f64>,
}

impl MovingBaseline {
    /// Advantages `r_i − b` of this batch, then the update of `b` with the batch's mean reward.
    /// An empty batch returns nothing and leaves `b` unchanged.
    pub fn advantages(&mut self, rewards: &[f64], decay: f64) -> Vec<f64> {
        if rewards.is_empty() {
            return Vec::new();
        }
        let b = self.value.unwrap_or(0.0);
        let out = rewards.iter().map(|&r| r - b).collect();
        let m = mean(rewards);
        self.value = Some(match self.value {
            None => m,
            Some(b) => decay * b + (1.0 - decay) * m,
        });
        out
    }
}

/// Spreads one advantage per sequence over its valid tokens: `A_{i,t} = A_i · m_{i,t}`.
///
/// # Panics
/// If `seq_adv` does not have one entry per row of `mask`.
pub fn broadcast(seq_adv: &[f64], mask: &Array2<f64>) -> Array2<f64> {
    assert_eq!(
        seq_adv.len(),
        mask.nrows(),
        "broadcast: {} advantages for a mask of shape {:?}",
        seq_adv.len(),
        mask.shape()
    );
    let mut out = mask.clone();
    for (mut row, &a) in out.rows_mut().into_iter().zip(seq_adv) {
        row.mapv_inplace(|m| a * m);
    }
    out
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn rloo_matches_the_leave_one_out_formula() {
        // Group 1: r = (1, 0, 0, 1): A_1 = 1 − (0+0+1)/3 = 2/3, A_2 = 0 − (1+0+1)/3 = −2/3.
        // Group 2: r = (0.5, 2, −1, 0.5): A_1 = 0.5 − (2−1+0.5)/3 = 0, A_2 = 2 − 0/3 = 2,
        //          A_3 = −1 − 3/3 = −2, A_4 = 0.
        let a = rloo(&[1.0, 0.0, 0.0, 1.0, 0.5, 2.0, -1.0, 0.5], 4);
        close(&a, &[2.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0, 2.0 / 3.0, 0.0, 2.0, -2.0, 0.0]);
        // G/(G−1)·(r − mean) is the same estimator (verl's form).
        let r = [0.3, 0.9, 0.1];
        let m = (0.3 + 0.9 + 0.1) / 3.0;
        close(&rloo(&r, 3), &r.map(|x| 1.5 * (x - m)));
    }

    #[test]
    fn grpo_matches_the_z_score() {
        // r = (1, 0, 0, 1): mean 0.5, Bessel std = sqrt(4·0.25/3) = sqrt(1/3).
        let s = (1.0f64 / 3.0).sqrt();
        let eps = 1e-4;
        let a = grpo(&[1.0, 0.0, 0.0, 1.0], 4, StdScale::Group, eps);
        close(&a, &[0.5 / (s + eps), -0.5 / (s + eps), -0.5 / (s + eps), 0.5 / (s + eps)]);
        // Batch scale: two groups (1, 0) and (3, 3); batch std of (1, 0, 3, 3) with mean 7/4:
        // Σ(r − 7/4)² = 9/16 + 49/16 + 25/16 + 25/16 = 27/4, / 3 = 9/4 → σ = 3/2.
        let a = grpo(&[1.0, 0.0, 3.0, 3.0], 2, StdScale::Batch, 0.0);
        close(&a, &[0.5 / 1.5, -0.5 / 1.5, 0.0, 0.0]);
        // No scaling (Dr. GRPO): r − mean only.
        let a = grpo(&[1.0, 0.0, 4.0, 2.0], 2, StdScale::None, 0.5);
        close(&a, &[0.5, -0.5, 1.0, -1.0]);
        close(&group_centered(&[1.0, 0.0, 4.0, 2.0], 2), &[0.5, -0.5, 1.0, -1.0]);
    }

    #[test]
    fn group_advantages_sum_to_zero_and_vanish_for_equal_rewards() {
        let r = [0.1, 0.7, 0.3, 0.9, 0.2, 0.2, 0.2, 0.5];
        for a in [
            rloo(&r, 4),
            grpo(&r, 4, StdScale::Group, 1e-6),
            grpo(&r, 4, StdScale::Batch, 1e-6),
            group_centered(&r, 4),
        ] {
            for g in a.chunks(4) {
                assert!(g.iter().sum::<f64>().abs() < 1e-12, "{a:?}");
            }
        }
        // Equal rewards (0.1 is not exactly representable, so a naive mean leaves residues).
        let eq = [0.1; 6];
        for a in [rloo(&eq, 3), grpo(&eq, 3, StdScale::Group, 0.0), group_centered(&eq, 3)] {
            assert!(a.iter().all(|&x| x == 0.0), "{a:?}");
        }
    }

    #[test]
    fn grpo_groups_of_one_are_zero_not_nan() {
        for scale in [StdScale::Group, StdScale::Batch, StdScale::None] {
            let a = grpo(&[1.0, 2.0, 5.0], 1, scale, 0.0);
            assert_eq!(a, vec![0.0; 3]);
        }
        let a = grpo(&[3.0], 1, StdScale::Batch, 0.0);
        assert_eq!(a, vec![0.0]);
    }

    #[test]
    #[should_panic(expected = "rloo: needs a group of at least 2")]
    fn rloo_rejects_groups_of_one() {
        rloo(&[1.0, 2.0], 1);
    }

    #[test]
    #[should_panic(expected = "do not split into groups")]
    fn ragged_groups_panic() {
        grpo(&[1.0, 2.0, 3.0], 2, StdScale::Group, 1e-4);
    }

    #[test]
    fn moving_baseline_uses_only_past_batches() {
        let mut b = MovingBaseline::default();
        // First batch: b = 0, then b = mean = 2.
        assert_eq!(b.advantages(&[1.0, 3.0], 0.9), vec![1.0, 3.0]);
        assert_eq!(b.value, Some(2.0));
        // Second batch: A = r − 2, then b = 0.9·2 + 0.1·mean(4, 6) = 1.8 + 0.5 = 2.3.
        assert_eq!(b.advantages(&[4.0, 6.0], 0.9), vec![2.0, 4.0]);
        assert!((b.value.unwrap() - 2.3).abs() < 1e-12);
        // The advantage of a batch never depends on that batch's own rewards through b.
        let (mut c, past) = (b, b.value.unwrap());
        let a1 = b.advantages(&[0.0, 0.0], 0.5);
        let a2 = c.advantages(&[100.0, 100.0], 0.5);
        assert_eq!(a1, vec![-past, -past]);
        assert_eq!(a2, vec![100.0 - past, 100.0 - past]);
        // Empty batches change nothing.
        let before = b;
        assert!(b.advantages(&[], 0.5).is_empty());
        assert_eq!(b, before);
    }

    #[test]
    fn broadcast_fills_valid_tokens_only() {
        let mask = array![[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        assert_eq!(broadcast(&[2.0, -1.0], &mask), array![[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]);
    }
}
