//! Token-level advantages: per-token rewards, discounted returns, batch whitening, REINFORCE++ and GAE.

use ndarray::Array2;

use super::outcome::group_centered;

/// verl's `masked_whiten` adds this inside the square root: `(x − μ) / sqrt(σ² + 1e-8)`.
const WHITEN_EPS: f64 = 1e-8;

fn check_same(op: &str, what: &str, a: &Array2<f64>, mask: &Array2<f64>) {
    assert!(
        a.shape() == mask.shape(),
        "{op}: {what} of shape {:?} does not match the mask of shape {:?}",
        a.shape(),
        mask.shape()
    );
}

/// The index of the last valid token of a mask row, if any.
fn last_valid(row: ndarray::ArrayView1<f64>) -> Option<usize> {
    row.iter().rposition(|&m| m != 0.0)
}

/// Per-token rewards in the RLHF form (Ziegler et al. 2019; verl `use_kl_in_reward`, TRL PPO):
/// `r_{i,t} = −β · KL_{i,t} · m_{i,t} + 1[t = last valid token of i] · score_i`,
/// where `kl = Some((KL, β))` gives the per-token KL estimates (usually k1 of old vs reference,
/// see [`crate::rl::loss::kl_values`]). A row without valid tokens has nowhere to put its score
/// and gets all zeros.
///
/// # Panics
/// If `scores` does not have one entry per row, or the KL array's shape differs from the mask's.
pub fn token_rewards(scores: &[f64], mask: &Array2<f64>, kl: Option<(&Array2<f64>, f64)>) -> Array2<f64> {
    assert_eq!(
        scores.len(),
        mask.nrows(),
        "token_rewards: {} scores for a mask of shape {:?}",
        scores.len(),
        mask.shape()
    );
    let mut r = match kl {
        Some((kl, beta)) => {
            check_same("token_rewards", "the KL", kl, mask);
            let mut r = kl * mask;
            r.mapv_inplace(|v| -beta * v);
            r
        }
        None => Array2::zeros(mask.raw_dim()),
    };
    for (i, &score) in scores.iter().enumerate() {
        if let Some(t) = last_valid(mask.row(i)) {
            r[[i, t]] += score;
        }
    }
    r
}

/// Discounted returns-to-go `G_{i,t} = m_{i,t} (r_{i,t} + γ G_{i,t+1})`, with `G = 0` past the end.
/// The mask resets the running return, so nothing flows back from padding (verl REINFORCE++).
///
/// # Panics
/// If the shapes differ.
pub fn returns_to_go(token_rewards: &Array2<f64>, mask: &Array2<f64>, gamma: f64) -> Array2<f64> {
    check_same("returns_to_go", "the rewards", token_rewards, mask);
    let mut g = Array2::zeros(mask.raw_dim());
    for i in 0..mask.nrows() {
        let mut running = 0.0;
        for t in (0..mask.ncols()).rev() {
            running = mask[[i, t]] * (token_rewards[[i, t]] + gamma * running);
            g[[i, t]] = running;
        }
    }
    g
}

/// Whitening over all valid tokens of the batch, as verl's `masked_whiten`:
/// `μ = Σ m x / Σ m`, `σ² = Σ m (x − μ)² / (Σ m − 1)` (Bessel), `y = (x − μ) / sqrt(σ² + 1e-8)`,
/// plus `μ` again when `shift_mean` is false (the mean is kept, only the scale changes).
/// The result is 0 on padding (verl leaves padding unmasked here; its losses mask it later).
/// With fewer than 2 valid tokens the variance is taken as 0 (verl raises an error).
///
/// # Panics
/// If the shapes differ.
pub fn whiten(x: &Array2<f64>, mask: &Array2<f64>, shift_mean: bool) -> Array2<f64> {
    check_same("whiten", "the values", x, mask);
    let count: f64 = mask.iter().sum();
    if count == 0.0 {
        return Array2::zeros(mask.raw_dim());
    }
    let mu = x.iter().zip(mask).map(|(v, m)| v * m).sum::<f64>() / count;
    let var = if count > 1.0 {
        x.iter().zip(mask).map(|(v, m)| m * (v - mu) * (v - mu)).sum::<f64>() / (count - 1.0)
    } else {
        0.0
    };
    let inv_std = 1.0 / (var + WHITEN_EPS).sqrt();
    let shift = if shift_mean { 0.0 } else { mu };
    let mut y = x.mapv(|v| (v - mu) * inv_std + shift);
    y *= mask;
    y
}

/// REINFORCE++ (Hu 2025; verl `reinforce_plus_plus`): returns-to-go of the token rewards, whitened
/// over all valid tokens of the batch, `A = whiten(G)`.
///
/// The "baseline" variant feeds group-centred scores ([`crate::rl::advantage::group_centered`])
/// into [`token_rewards`] first; with `γ = 1` and no KL term that equals [`reinforce_pp_baseline`].
///
/// # Panics
/// If the shapes differ.
pub fn reinforce_pp(token_rewards: &Array2<f64>, mask: &Array2<f64>, gamma: f64) -> Array2<f64> {
    whiten(&returns_to_go(token_rewards, mask, gamma), mask, true)
}

/// REINFORCE++-baseline exactly as verl computes it: the sequence score `s_i = Σ_t m r_{i,t}`
/// (a KL term in the token rewards is summed into it), centred by its group mean, put on every
/// valid token, then whitened over the batch with the mean shifted (`shift_mean = true`).
///
/// # Panics
/// If the shapes differ or the rows do not split into groups of `group`.
pub fn reinforce_pp_baseline(token_rewards: &Array2<f64>, mask: &Array2<f64>, group: usize) -> Array2<f64> {
    check_same("reinforce_pp_baseline", "the rewards", token_rewards, mask);
    let scores: Vec<f64> = (token_rewards * mask).rows().into_iter().map(|r| r.sum()).collect();
    let centred = group_centered(&scores, group);
    whiten(&super::outcome::broadcast(&centred, mask), mask, true)
}

/// Generalized Advantage Estimation (Schulman et al. 2016), as verl and TRL PPO compute it:
/// `δ_t = r_t + γ V_{t+1} − V_t` (with `V = 0` after the last valid token),
/// `Â_t = Σ_l (γλ)^l δ_{t+l} = δ_t + γλ Â_{t+1}`, `returns = Â + V` (before whitening),
/// then `advantages = whiten(Â)` over all valid tokens (mean shifted).
/// Returns `(advantages, returns)`, both 0 on padding. Masked tokens inside a row are skipped
/// (the next value and the running `Â` carry over them), as verl does for tool-output tokens.
///
/// # Panics
/// If the shapes differ.
pub fn gae(
    token_rewards: &Array2<f64>,
    values: &Array2<f64>,
    mask: &Array2<f64>,
    gamma: f64,
    lambda: f64,
) -> (Array2<f64>, Array2<f64>) {
    check_same("gae", "the rewards", token_rewards, mask);
    check_same("gae", "the values", values, mask);
    let mut adv = Array2::zeros(mask.raw_dim());
    let mut returns = Array2::zeros(mask.raw_dim());
    for i in 0..mask.nrows() {
        let (mut next_value, mut running) = (0.0, 0.0);
        for t in (0..mask.ncols()).rev() {
            if mask[[i, t]] == 0.0 {
                continue;
            }
            let v = values[[i, t]];
            let delta = token_rewards[[i, t]] + gamma * next_value - v;
            running = delta + gamma * lambda * running;
            next_value = v;
            adv[[i, t]] = running;
            returns[[i, t]] = running + v;
        }
    }
    (whiten(&adv, mask, true), returns)
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;
    use crate::rl::advantage::token_rewards as tr;

    fn assert_close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "\n{a:?}\n!=\n{b:?}");
        }
    }

    #[test]
    fn token_rewards_put_the_score_on_the_last_token_and_kl_everywhere() {
        let mask = array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]];
        let kl = array![[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]];
        // r_t = −β KL_t m_t + 1[t = T_i] score_i with β = 0.5.
        let want = array![[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0], [0.0, 0.0, 0.0]];
        assert_close(&tr(&[1.0, 2.0, 3.0], &mask, Some((&kl, 0.5))), &want, 1e-15);
        let want = array![[0.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]];
        assert_eq!(tr(&[1.0, 2.0, 3.0], &mask, None), want);
    }

    #[test]
    fn returns_to_go_discount_and_stop_at_padding() {
        let r = array![[1.0, 2.0, 4.0], [1.0, 2.0, 9.0]];
        let mask = array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]];
        // γ = 0.5: G_2 = 4, G_1 = 2 + 0.5·4 = 4, G_0 = 1 + 0.5·4 = 3; row 2: G_1 = 2, G_0 = 1 + 1 = 2.
        assert_eq!(returns_to_go(&r, &mask, 0.5), array![[3.0, 4.0, 4.0], [2.0, 2.0, 0.0]]);
    }

    #[test]
    fn whiten_matches_verl_masked_whiten() {
        let x = array![[1.0, 2.0], [3.0, 100.0]];
        let mask = array![[1.0, 1.0], [1.0, 0.0]];
        // μ = 2, unbiased σ² = (1 + 0 + 1)/(3 − 1) = 1, y = (x − 2)/sqrt(1 + 1e-8).
        let s = (1.0f64 + 1e-8).sqrt();
        assert_close(&whiten(&x, &mask, true), &array![[-1.0 / s, 0.0], [1.0 / s, 0.0]], 1e-15);
        assert_close(&whiten(&x, &mask, false), &array![[2.0 - 1.0 / s, 2.0], [2.0 + 1.0 / s, 0.0]], 1e-15);
        // Whitened values have mean 0 and unbiased variance ≈ 1 over the valid tokens.
        let x = array![[0.3, -1.2, 4.0, 2.0], [0.5, 0.0, 7.0, -3.0]];
        let mask = array![[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]];
        let y = whiten(&x, &mask, true);
        let vals: Vec<f64> = y.iter().zip(&mask).filter(|(_, m)| **m > 0.0).map(|(v, _)| *v).collect();
        let mean = vals.iter().sum::<f64>() / 5.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-6, "{mean} {var}");
        assert_eq!((y[[0, 3]], y[[1, 2]], y[[1, 3]]), (0.0, 0.0, 0.0));
        // Degenerate masks: no NaN.
        assert_eq!(whiten(&x, &Array2::zeros((2, 4)), true), Array2::<f64>::zeros((2, 4)));
        let one = array![[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]];
        assert!(whiten(&x, &one, true).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn reinforce_pp_is_whitened_returns() {
        let r = array![[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [0.5, 0.0, 0.0]];
        let mask = array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        // γ = 1: G = [[1, 1, 1], [−1, −1, ·], [0.5, ·, ·]]; μ = 2.5/6, σ² = Σ(G − μ)²/5.
        let g = [1.0, 1.0, 1.0, -1.0, -1.0, 0.5];
        let mu = g.iter().sum::<f64>() / 6.0;
        let s = (g.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / 5.0 + 1e-8).sqrt();
        let w = |v: f64| (v - mu) / s;
        let want = array![[w(1.0), w(1.0), w(1.0)], [w(-1.0), w(-1.0), 0.0], [w(0.5), 0.0, 0.0]];
        assert_close(&reinforce_pp(&r, &mask, 1.0), &want, 1e-12);
    }

    #[test]
    fn reinforce_pp_baseline_equals_centred_scores_through_reinforce_pp() {
        let mask = array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]];
        let scores = [1.0, 0.0, 0.3, 0.9];
        let centred = group_centered(&scores, 2);
        let via_tokens = reinforce_pp(&tr(&centred, &mask, None), &mask, 1.0);
        let direct = reinforce_pp_baseline(&tr(&scores, &mask, None), &mask, 2);
        assert_close(&via_tokens, &direct, 1e-12);
        // With a KL term verl sums it into the score first, so the two differ.
        let kl = Array2::from_elem((4, 3), 0.2);
        let a = reinforce_pp_baseline(&tr(&scores, &mask, Some((&kl, 1.0))), &mask, 2);
        assert!((&a - &direct).iter().any(|v| v.abs() > 1e-3));
    }

    #[test]
    fn gae_matches_the_recursion_by_hand() {
        let r = array![[0.0, 0.0, 1.0, 0.0]];
        let v = array![[0.5, 0.2, 0.4, 99.0]];
        let mask = array![[1.0, 1.0, 1.0, 0.0]];
        // γ = 0.9, λ = 0.8, V after the last valid token = 0:
        // δ_2 = 1 − 0.4 = 0.6; δ_1 = 0.9·0.4 − 0.2 = 0.16; δ_0 = 0.9·0.2 − 0.5 = −0.32;
        // Â_2 = 0.6; Â_1 = 0.16 + 0.72·0.6 = 0.592; Â_0 = −0.32 + 0.72·0.592 = 0.10624.
        let raw = array![[0.10624, 0.592, 0.6, 0.0]];
        let (adv, ret) = gae(&r, &v, &mask, 0.9, 0.8);
        assert_close(&ret, &array![[0.60624, 0.792, 1.0, 0.0]], 1e-12);
        assert_close(&adv, &whiten(&raw, &mask, true), 1e-12);
    }

    #[test]
    fn gae_special_cases() {
        let r = array![[0.0, -0.1, 1.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.0]];
        let v = array![[0.3, -0.7, 0.4], [1.1, 0.2, 5.0], [0.9, 0.0, 0.0]];
        let mask = array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        // λ = γ = 1, V = 0: GAE is the Monte-Carlo return, so it equals REINFORCE++.
        let zero = Array2::zeros((3, 3));
        let (adv, ret) = gae(&r, &zero, &mask, 1.0, 1.0);
        assert_close(&ret, &returns_to_go(&r, &mask, 1.0), 1e-15);
        assert_close(&adv, &reinforce_pp(&r, &mask, 1.0), 1e-12);
        // λ = 1, any V: the sum telescopes, Â_t = G_t − V_t, so returns = G_t.
        let (_, ret) = gae(&r, &v, &mask, 0.95, 1.0);
        assert_close(&ret, &returns_to_go(&r, &mask, 0.95), 1e-12);
        // λ = 0: Â_t = δ_t = r_t + γ V_{t+1} − V_t (one-step TD error).
        let (_, ret) = gae(&r, &v, &mask, 0.5, 0.0);
        let want =
            array![[0.0 + 0.5 * -0.7, -0.1 + 0.5 * 0.4, 1.0], [0.2 + 0.5 * 0.2, 0.5, 0.0], [0.0, 0.0, 0.0]];
        assert_close(&ret, &want, 1e-12);
        // Padding values (v[1][2] = 5) never leak into valid tokens.
        let mut v2 = v.clone();
        v2[[1, 2]] = -1e6;
        v2[[2, 1]] = 1e6;
        assert_eq!(gae(&r, &v, &mask, 0.9, 0.7), gae(&r, &v2, &mask, 0.9, 0.7));
    }
}
