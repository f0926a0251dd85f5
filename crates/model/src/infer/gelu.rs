//! GELU for the decode path, with a tanh that vectorises.
//!
//! libm's `tanhf` is a scalar call of about 20 ns: at batch 16 the MLP's 16 x 1024 activations per
//! layer would cost over a millisecond per step, more than all the matrix products. In f32 we use
//!
//! ```text
//! tanh(y) = sign(y) (1 − e) / (1 + e),   e = exp(−2|y|)
//! exp(z)  = 2^m · p(r),   m = round(z / ln 2),   r = z − m ln 2  (|r| ≤ ln 2 / 2)
//! ```
//!
//! with `p` the degree-7 Taylor polynomial of `exp` (truncation error below 6e-9 relative). Its
//! absolute error stays within two ulp of 1 (what GELU's `1 + tanh` sees) and within a few ulp of
//! the value for |y| ≥ 0.5 (tested), and it compiles to straight-line SIMD. f64 models keep
//! libm's `tanh` (they are for tests, where exactness matters more than speed).

use pglm_autograd::Float;

/// sqrt(2/pi), the GELU tanh approximation's scale.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// The cubic coefficient of GPT-2's GELU.
const CUBIC: f64 = 0.044715;

/// `row ← gelu(row)`, GPT-2's `gelu_new`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
pub(crate) fn gelu_in_place<F: Float>(row: &mut [F]) {
    if std::mem::size_of::<F>() == 4 {
        // F is f32: the conversions below are identities that the compiler removes.
        for h in row.iter_mut() {
            *h = F::of(gelu_f32(h.to_f64() as f32) as f64);
        }
    } else {
        let (s, c, half) = (F::of(SQRT_2_OVER_PI), F::of(CUBIC), F::of(0.5));
        for h in row.iter_mut() {
            let x = *h;
            *h = half * x * (F::one() + (s * (x + c * x * x * x)).tanh());
        }
    }
}

/// GELU of one f32, with [`tanh_f32`].
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI as f32 * (x + CUBIC as f32 * x * x * x);
    0.5 * x * (1.0 + tanh_f32(u))
}

/// tanh in f32 from one `exp` of a non-positive argument (see the module docs); branch-free.
#[inline(always)]
pub(crate) fn tanh_f32(y: f32) -> f32 {
    // Past |y| = 9, 1 − tanh|y| < 3e-8 is below half an ulp of 1: tanh rounds to ±1.
    let t = y.abs().min(9.0);
    let e = exp_f32(-2.0 * t);
    ((1.0 - e) / (1.0 + e)).copysign(y)
}

/// exp(z) for z in [−18, 0], to a few ulp: 2^m · p(r) (see the module docs).
#[inline(always)]
fn exp_f32(z: f32) -> f32 {
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that m · LN2_HI is exact (Cody-Waite).
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -0.000_212_194_44;
    // m = round_ties_even(z · log2 e): adding 1.5 · 2²³ rounds to an integer, which the sum's
    // low mantissa bits then hold. (An `as i32` cast would saturate, lane by lane, unvectorised.)
    const MAGIC: f32 = 12_582_912.0;
    let shifted = z * std::f32::consts::LOG2_E + MAGIC;
    let m = shifted - MAGIC;
    let m_int = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = (z - m * LN2_HI) - m * LN2_LO;
    // p(r) = sum_{i ≤ 7} r^i / i!, by Horner.
    let mut p = 1.0 / 5040.0f32;
    p = r.mul_add(p, 1.0 / 720.0);
    p = r.mul_add(p, 1.0 / 120.0);
    p = r.mul_add(p, 1.0 / 24.0);
    p = r.mul_add(p, 1.0 / 6.0);
    p = r.mul_add(p, 0.5);
    p = r.mul_add(p, 1.0);
    p = r.mul_add(p, 1.0);
    // 2^m from its exponent bits (m ≥ −26 here, a normal number).
    let scale = f32::from_bits(((m_int + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_tanh_f32_is_close_to_libm() {
        // GELU adds tanh to 1, so the absolute error is what counts near 0: at most two ulp of 1;
        // away from 0 (where 1 − e does not cancel) also a few ulp of the value itself.
        let (mut abs, mut rel) = (0.0f64, 0.0f64);
        for i in -200_000..=200_000 {
            let y = i as f32 * 1e-4; // [-20, 20]
            let (a, b) = (tanh_f32(y) as f64, (y as f64).tanh());
            abs = abs.max((a - b).abs());
            if y.abs() >= 0.5 {
                rel = rel.max((a - b).abs() / (b.abs() * f32::EPSILON as f64));
            }
        }
        assert!(abs <= 2.0 * f32::EPSILON as f64, "worst absolute error {abs}");
        assert!(rel < 4.0, "worst error {rel} ulp for |y| >= 0.5");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!((tanh_f32(30.0), tanh_f32(-1e30)), (1.0, -1.0));
    }

    #[test]
    fn infer_gelu_f32_matches_the_f64_formula() {
        let mut row: Vec<f32> = (-1000..1000).map(|i| i as f32 * 0.01).collect();
        let exact: Vec<f64> = row.iter().map(|&x| x as f64).collect();
        let mut exact64 = exact.clone();
        gelu_in_place(&mut row);
        gelu_in_place(&mut exact64);
        for ((&g, &e), &x) in row.iter().zip(&exact64).zip(&exact) {
            assert!((g as f64 - e).abs() <= 2e-7 * (1.0 + x.abs()), "x {x}: {g} vs {e}");
        }
    }
}
