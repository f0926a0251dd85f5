//! Tests of the policy loss: hand-computed values, on-policy equivalence with REINFORCE, and which
//! tokens clipping silences.

use ndarray::{Array2, ArrayD, array};
use pglm_autograd::{Float, Tape};

use super::*;
use crate::rl::loss::{Aggregation, token_weights};

fn cfg(kind: PolicyLossKind, level: RatioLevel, dual: Option<f64>) -> PolicyLossConfig {
    PolicyLossConfig { kind, clip_low: 0.2, clip_high: 0.28, dual_clip: dual, ratio_level: level }
}

/// The loss value and its gradient with respect to `logp`.
fn run<F: Float>(
    logp: &Array2<F>,
    old: &Array2<F>,
    adv: &Array2<F>,
    mask: &Array2<F>,
    w: &Array2<F>,
    c: &PolicyLossConfig,
) -> (f64, Array2<F>, PolicyStats) {
    let mut tape = Tape::<F>::new();
    let x = tape.input(logp.clone().into_dyn());
    let terms = policy_loss(&mut tape, x, old, adv, mask, w, c);
    let value = Float::to_f64(*tape.value(terms.loss).iter().next().unwrap());
    let grads = tape.backward(terms.loss);
    let g = grads.wrt(x).unwrap().clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    (value, g, terms.stats)
}

/// Log-ratios `d`, so that `ρ = e^d`: the first token inside the clip range, then clipped-low,
/// then above the upper bound.
#[test]
fn clip_loss_by_hand() {
    let d = [0.1f64, -0.3, 0.3];
    let logp = array![[-1.0, -2.0, -0.5, -3.0]];
    let old = array![[-1.0 - d[0], -2.0 - d[1], -0.5 - d[2], -7.0]];
    let adv = array![[1.0, -1.0, -1.0, 5.0]];
    let mask = array![[1.0, 1.0, 1.0, 0.0]];
    let w = array![[0.25, 0.25, 0.25, 0.0]];
    let rho = d.map(f64::exp); // 1.105, 0.741, 1.350
    // ℓ = −min(ρA, clip(ρ, 0.8, 1.28)A):
    // token 0 (A = 1, inside): −ρ_0; token 1 (A = −1, ρ < 0.8): −min(−ρ_1, −0.8) = 0.8;
    // token 2 (A = −1, ρ > 1.28): −min(−ρ_2, −1.28) = ρ_2.
    let want = 0.25 * (-rho[0] + 0.8 + rho[2]);
    let (v, g, s) = run(&logp, &old, &adv, &mask, &w, &cfg(PolicyLossKind::Clip, RatioLevel::Token, None));
    assert!((v - want).abs() < 1e-14, "{v} vs {want}");
    // ∂ℓ/∂log π = −A ρ on unclipped tokens, 0 on the clipped one and on padding.
    let want_g = array![[-0.25 * rho[0], 0.0, 0.25 * rho[2], 0.0]];
    assert!((&g - &want_g).iter().all(|e| e.abs() < 1e-14), "{g:?}");
    assert_eq!((s.tokens, s.clip_frac_low, s.clip_frac_high), (3.0, 1.0 / 3.0, 0.0));
    assert!((s.ratio_mean - rho.iter().sum::<f64>() / 3.0).abs() < 1e-14);
    assert_eq!((s.ratio_min, s.ratio_max), (rho[1], rho[2]));
    assert!((s.approx_kl - -(0.1 - 0.3 + 0.3) / 3.0).abs() < 1e-14);

    // Dual clip c = 1.3 caps token 2 at −cA = 1.3, with no gradient.
    let c = cfg(PolicyLossKind::Clip, RatioLevel::Token, Some(1.3));
    let (v, g, s) = run(&logp, &old, &adv, &mask, &w, &c);
    assert!((v - 0.25 * (-rho[0] + 0.8 + 1.3)).abs() < 1e-14);
    assert_eq!(g[[0, 2]], 0.0);
    assert_eq!(s.dual_clip_frac, 1.0 / 3.0);

    // REINFORCE: ℓ = −A log π = (1, −2, −0.5) on the valid tokens; ∂ℓ/∂log π = −A.
    let c = cfg(PolicyLossKind::Vanilla, RatioLevel::Token, None);
    let (v, g, s) = run(&logp, &old, &adv, &mask, &w, &c);
    let want = 0.25 * (1.0 - 2.0 - 0.5);
    assert!((v - want).abs() < 1e-15);
    assert_eq!(g, array![[-0.25, 0.25, 0.25, 0.0]]);
    assert_eq!(s.clip_frac_low, 0.0);
}

#[test]
fn gspo_sequence_ratio_by_hand() {
    // One sequence of 2 tokens with log-ratios 0.1 and 0.3: s = exp(0.2) ≈ 1.2214 (inside 0.8..1.28).
    let logp = array![[-1.0, -2.0, 0.0]];
    let old = array![[-1.1, -2.3, 4.0]];
    let adv = array![[2.0, 2.0, 0.0]];
    let mask = array![[1.0, 1.0, 0.0]];
    let w = token_weights(Aggregation::SeqMeanTokenMean, &mask, 0.0);
    let s = 0.2f64.exp();
    let c = cfg(PolicyLossKind::Clip, RatioLevel::Sequence, None);
    let (v, g, st) = run(&logp, &old, &adv, &mask, &w, &c);
    // loss = −s A (GSPO with seq-mean-token-mean); ∂/∂log π_t = −A s / |o| for each token.
    assert!((v - -2.0 * s).abs() < 1e-14);
    assert!((&g - &array![[-s, -s, 0.0]]).iter().all(|e| e.abs() < 1e-14), "{g:?}");
    assert_eq!(st.ratio_min, st.ratio_max);
    // Push the sequence ratio past 1.28: exp(0.3) ≈ 1.35 → clipped, no gradient for any token.
    let old = array![[-1.1, -2.5, 4.0]];
    let (v, g, st) = run(&logp, &old, &adv, &mask, &w, &c);
    assert!((v - -2.0 * 1.28).abs() < 1e-14);
    assert!(g.iter().all(|&e| e == 0.0));
    assert_eq!(st.clip_frac_high, 1.0);
}

/// Rollout-like data: 3 sequences of lengths 4, 2 and 3, padded to 4.
fn batch() -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let logp = array![[-1.3, -0.2, -2.1, -0.7], [-0.4, -1.9, 0.0, 0.0], [-3.0, -0.05, -1.1, 0.0]];
    let mask = array![[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]];
    let adv = crate::rl::advantage::broadcast(&[0.7, -1.2, 0.4], &mask);
    (logp, mask, adv)
}

#[test]
fn on_policy_clip_gradient_is_exactly_reinforce() {
    let (logp, mask, adv) = batch();
    // Token-level advantages as well (e.g. from GAE): the claim holds per token.
    let token_adv = array![[0.5, -0.1, 1.5, -2.0], [0.3, -0.9, 0.0, 0.0], [-0.2, 0.8, 0.1, 0.0]];
    for agg in [Aggregation::SeqMeanTokenMean, Aggregation::TokenMean, Aggregation::TokenSumNorm] {
        let w = token_weights(agg, &mask, 8.0);
        for a in [&adv, &token_adv] {
            let vanilla = cfg(PolicyLossKind::Vanilla, RatioLevel::Token, None);
            let (_, g_ref, _) = run(&logp, &logp, a, &mask, &w, &vanilla);
            for dual in [None, Some(3.0)] {
                let c = cfg(PolicyLossKind::Clip, RatioLevel::Token, dual);
                let (v, g, s) = run(&logp, &logp, a, &mask, &w, &c);
                assert_eq!(g, g_ref, "{agg:?} dual {dual:?}");
                // The loss value is −Σ w A (ratio 1), not the REINFORCE value.
                assert!((v - -(&w * a).sum()).abs() < 1e-15);
                assert_eq!((s.ratio_min, s.ratio_max, s.approx_kl), (1.0, 1.0, 0.0));
            }
        }
    }
    // The same in f32.
    let f = |a: &Array2<f64>| a.mapv(|v| v as f32);
    let w = f(&token_weights(Aggregation::TokenMean, &mask, 0.0));
    let vanilla = cfg(PolicyLossKind::Vanilla, RatioLevel::Token, None);
    let clip = cfg(PolicyLossKind::Clip, RatioLevel::Token, Some(3.0));
    let (_, g_ref, _) = run(&f(&logp), &f(&logp), &f(&adv), &f(&mask), &w, &vanilla);
    let (_, g, _) = run(&f(&logp), &f(&logp), &f(&adv), &f(&mask), &w, &clip);
    assert_eq!(g, g_ref);
}

/// On-policy GSPO differentiates `s_i = exp(mean_t log ρ)`, so token `t` of sequence `i` gets
/// `−m_{i,t} (Σ_s w_{i,s} A_{i,s}) / |o_i|`: REINFORCE with `w A` replaced by its sequence average.
/// Every [`Aggregation`] gives weights that are constant within a sequence, so with one advantage
/// per sequence (GRPO, RLOO, ...) GSPO's on-policy gradient is exactly REINFORCE's; with per-token
/// advantages (GAE) it is the averaged one, which differs.
#[test]
fn on_policy_gspo_gradient_is_reinforce_with_sequence_averaged_coefficients() {
    let (logp, mask, adv) = batch();
    let token_adv = array![[0.5, -0.1, 1.5, -2.0], [0.3, -0.9, 0.0, 0.0], [-0.2, 0.8, 0.1, 0.0]];
    let vanilla = cfg(PolicyLossKind::Vanilla, RatioLevel::Token, None);
    let gspo = cfg(PolicyLossKind::Clip, RatioLevel::Sequence, Some(3.0));
    let lens = mask.sum_axis(ndarray::Axis(1));
    let close = |a: &Array2<f64>, b: &Array2<f64>| (a - b).iter().all(|e| e.abs() < 1e-15);
    for agg in [
        Aggregation::SeqMeanTokenMean,
        Aggregation::TokenMean,
        Aggregation::SeqMeanTokenSum,
        Aggregation::TokenSumNorm,
    ] {
        let w = token_weights(agg, &mask, 8.0);
        // Sequence-level advantages: exactly REINFORCE with the same weights.
        let (_, g, _) = run(&logp, &logp, &adv, &mask, &w, &gspo);
        let (_, g_ref, _) = run(&logp, &logp, &adv, &mask, &w, &vanilla);
        assert!(close(&g, &g_ref), "{agg:?}: {g:?} vs {g_ref:?}");
        // Token-level advantages: −m (Σ_s w A) / |o_i|, not REINFORCE's −w A.
        let (_, g, _) = run(&logp, &logp, &token_adv, &mask, &w, &gspo);
        let wa = (&w * &token_adv).sum_axis(ndarray::Axis(1));
        let want = Array2::from_shape_fn(mask.raw_dim(), |(i, t)| -mask[[i, t]] * wa[i] / lens[i]);
        assert!(close(&g, &want), "{agg:?}: {g:?} vs {want:?}");
        let (_, g_ref, _) = run(&logp, &logp, &token_adv, &mask, &w, &vanilla);
        assert!((&g - &g_ref).iter().any(|e| e.abs() > 1e-3));
    }
}

#[test]
fn clipped_side_tokens_get_exactly_zero_gradient() {
    // ε_low = 0.2, ε_high = 0.28, c = 3. Ratios ρ = e^d per token; A per token.
    // (d, A, gradient expected?)
    let cases: [(f64, f64, bool); 9] = [
        (0.5, 1.0, false),   // A > 0, ρ = 1.65 > 1.28: clipped
        (0.1, 1.0, true),    // inside
        (-0.5, 1.0, true),   // A > 0, ρ = 0.61 < 0.8: the unclipped side, ρA is the minimum
        (-0.5, -1.0, false), // A < 0, ρ < 0.8: clipped
        (-0.1, -1.0, true),  // inside
        (0.5, -1.0, true),   // A < 0, ρ = 1.65 > 1.28 (below c): unclipped side
        (1.5, -1.0, false),  // A < 0, ρ = 4.48 > c = 3: dual-clipped
        (1.5, 1.0, false),   // A > 0, ρ = 4.48: clipped at the top
        (0.0, 0.0, false),   // A = 0: no signal
    ];
    let n = cases.len();
    let logp = Array2::from_shape_fn((1, n), |(_, t)| -0.5 - 0.1 * t as f64);
    let old = Array2::from_shape_fn((1, n), |(_, t)| logp[[0, t]] - cases[t].0);
    let adv = Array2::from_shape_fn((1, n), |(_, t)| cases[t].1);
    let mask = Array2::ones((1, n));
    let w = token_weights(Aggregation::TokenMean, &mask, 0.0);
    let (_, g, s) =
        run(&logp, &old, &adv, &mask, &w, &cfg(PolicyLossKind::Clip, RatioLevel::Token, Some(3.0)));
    for (t, &(d, a, live)) in cases.iter().enumerate() {
        if live {
            // The unclipped gradient −w A ρ.
            let want = -w[[0, t]] * a * d.exp();
            assert!((g[[0, t]] - want).abs() < 1e-15, "token {t}: {} vs {want}", g[[0, t]]);
        } else {
            assert_eq!(g[[0, t]], 0.0, "token {t}");
        }
    }
    let frac = |k: f64| k / n as f64;
    assert_eq!((s.clip_frac_low, s.clip_frac_high, s.dual_clip_frac), (frac(1.0), frac(2.0), frac(1.0)));
    // Without the dual clip, the A < 0, ρ = 4.48 token is live again.
    let (_, g, _) = run(&logp, &old, &adv, &mask, &w, &cfg(PolicyLossKind::Clip, RatioLevel::Token, None));
    assert!(g[[0, 6]] != 0.0);
}

#[test]
fn padding_contributes_nothing() {
    let (logp, mask, adv) = batch();
    let w = token_weights(Aggregation::SeqMeanTokenSum, &mask, 0.0);
    let old = logp.mapv(|v| v - 0.05);
    // Garbage in every padded position, including values that would overflow exp.
    let pad = |a: &Array2<f64>, junk: f64| {
        Array2::from_shape_fn(a.raw_dim(), |(i, t)| if mask[[i, t]] == 0.0 { junk } else { a[[i, t]] })
    };
    for c in [
        cfg(PolicyLossKind::Clip, RatioLevel::Token, Some(3.0)),
        cfg(PolicyLossKind::Clip, RatioLevel::Sequence, None),
        cfg(PolicyLossKind::Vanilla, RatioLevel::Token, None),
    ] {
        let (v, g, s) = run(&logp, &old, &adv, &mask, &w, &c);
        let (v2, g2, s2) = run(&pad(&logp, 500.0), &pad(&old, -900.0), &pad(&adv, 1e9), &mask, &w, &c);
        assert_eq!((v, s), (v2, s2), "{c:?}");
        assert_eq!(g, g2);
        assert!(g.iter().zip(&mask).all(|(g, m)| *m != 0.0 || *g == 0.0));
        assert!(v.is_finite());
    }
}

#[test]
fn empty_batches_give_zero_loss_and_default_stats() {
    let z = Array2::<f64>::zeros((2, 3));
    let c = cfg(PolicyLossKind::Clip, RatioLevel::Sequence, Some(3.0));
    let (v, g, s) = run(&z, &z, &z, &z, &z, &c);
    assert_eq!((v, s), (0.0, PolicyStats::default()));
    assert!(g.iter().all(|&e| e == 0.0));
}

#[test]
#[should_panic(expected = "policy_loss: adv of shape [2, 3]")]
fn shape_mismatch_panics() {
    let mut tape = Tape::<f64>::new();
    let x = tape.input(ArrayD::zeros(vec![2, 2]));
    let z = Array2::zeros((2, 2));
    let c = cfg(PolicyLossKind::Clip, RatioLevel::Token, None);
    policy_loss(&mut tape, x, &z, &Array2::zeros((2, 3)), &z, &z, &c);
}
