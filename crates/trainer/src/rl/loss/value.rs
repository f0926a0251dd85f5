//! The critic's loss for PPO with GAE: squared error to the returns, with PPO's value clipping.

use ndarray::Array2;
use pglm_autograd::{Float, Tape, Var};

use super::{check_shape, constant, support};

/// `Σ_{i,t} w_{i,t} · ½ max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²)` (PPO's clipped value
/// loss as in verl and TRL PPO; with `clip = None` just `½ (V − R)²`), where `values` is the value
/// head's `(n, L)` output on the tape, `returns` the GAE targets and `old_values` the rollout's values.
///
/// Returns the loss and the clip fraction: the share of tokens with `w ≠ 0` whose clipped error is
/// the larger (verl `vf_clipfrac`), 0 without clipping.
///
/// # Panics
/// If an array's shape differs from `values`', or `clip` is negative.
pub fn value_loss<F: Float>(
    tape: &mut Tape<F>,
    values: Var,
    old_values: &Array2<F>,
    returns: &Array2<F>,
    weights: &Array2<F>,
    clip: Option<f64>,
) -> (Var, f64) {
    let shape = tape.shape(values).to_vec();
    for (what, a) in [("old_values", old_values), ("returns", returns), ("weights", weights)] {
        check_shape("value_loss", what, &shape, a);
    }
    let r = constant(tape, returns);
    let err = tape.sub(values, r);
    let sq = tape.mul(err, err); // (V − R)²
    let (sq, clip_frac) = match clip {
        None => (sq, 0.0),
        Some(eps) => {
            assert!(eps >= 0.0, "value_loss: the value clip must be >= 0, got {eps}");
            // V_clipped = V_old + clamp(V − V_old, −ε, ε)
            let old = constant(tape, old_values);
            let step = tape.sub(values, old);
            let step = tape.clamp(step, -eps, eps);
            let clipped = tape.add(old, step);
            let err_c = tape.sub(clipped, r);
            let sq_c = tape.mul(err_c, err_c);
            let frac = clip_fraction(tape.value(sq).view(), tape.value(sq_c).view(), weights);
            (tape.maximum(sq, sq_c), frac)
        }
    };
    let half_w = constant(tape, &weights.mapv(|w| w * F::of(0.5)));
    let weighted = tape.mul(sq, half_w);
    (tape.sum_all(weighted), clip_frac)
}

/// The share of counted tokens (`w ≠ 0`) where the clipped squared error exceeds the plain one.
fn clip_fraction<F: Float>(
    sq: ndarray::ArrayViewD<F>,
    sq_c: ndarray::ArrayViewD<F>,
    weights: &Array2<F>,
) -> f64 {
    let valid = support(weights);
    let (mut clipped, mut count) = (0.0, 0.0);
    for ((a, b), m) in sq.iter().zip(sq_c.iter()).zip(valid.iter()) {
        if *m != F::zero() {
            count += 1.0;
            clipped += f64::from(u8::from(*b > *a));
        }
    }
    if count > 0.0 { clipped / count } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn run(
        v: &Array2<f64>,
        old: &Array2<f64>,
        r: &Array2<f64>,
        w: &Array2<f64>,
        clip: Option<f64>,
    ) -> (f64, Vec<f64>, f64) {
        let mut tape = Tape::<f64>::new();
        let x = tape.input(v.clone().into_dyn());
        let (loss, frac) = value_loss(&mut tape, x, old, r, w, clip);
        let value = tape.value(loss).iter().next().copied().unwrap();
        let g = tape.backward(loss).wrt(x).unwrap().iter().copied().collect();
        (value, g, frac)
    }

    #[test]
    fn clipped_value_loss_by_hand() {
        // ε = 0.2. Tokens 0 and 1: V moved 0.5 from V_old, beyond ε, and the clipped error is the
        // larger. Token 2: V within ε of V_old, both errors equal. Token 3: padding (w = 0).
        let v = array![[1.5, 0.5, 0.1, 7.0]];
        let old = array![[1.0, 0.0, 0.0, -3.0]];
        let r = array![[2.0, 0.4, 0.3, 0.0]];
        let w = array![[0.5, 0.25, 0.25, 0.0]];
        // Token 0: (V − R)² = 0.25; V_c = 1.2, (V_c − R)² = 0.64 → 0.64 (clipped, no gradient).
        // Token 1: (V − R)² = 0.01; V_c = 0.2, (V_c − R)² = 0.04 → 0.04 (clipped, no gradient).
        // Token 2: both (0.1 − 0.3)² = 0.04 → gradient (V − R) · w.
        let want = 0.5 * 0.5 * 0.64 + 0.5 * 0.25 * 0.04 + 0.5 * 0.25 * 0.04;
        let (value, g, frac) = run(&v, &old, &r, &w, Some(0.2));
        assert!((value - want).abs() < 1e-15, "{value} vs {want}");
        assert_eq!(frac, 2.0 / 3.0);
        let want_g = [0.0, 0.0, 0.25 * (0.1 - 0.3), 0.0];
        for (a, b) in g.iter().zip(want_g) {
            assert!((a - b).abs() < 1e-15, "{g:?}");
        }
        // Without clipping: ½ Σ w (V − R)², gradient w (V − R).
        let (value, g, frac) = run(&v, &old, &r, &w, None);
        let want = 0.5 * (0.5 * 0.25 + 0.25 * 0.01 + 0.25 * 0.04);
        assert!((value - want).abs() < 1e-15);
        assert_eq!(frac, 0.0);
        let want_g = [0.5 * -0.5, 0.25 * 0.1, 0.25 * -0.2, 0.0];
        for (a, b) in g.iter().zip(want_g) {
            assert!((a - b).abs() < 1e-15, "{g:?}");
        }
    }
}
