//! The element types a tape can hold: `f32` (training) and `f64` (gradient checks).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

/// A floating-point element type. Implemented for `f32` and `f64` only.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
    /// Converts from `f64`, rounding to the nearest representable value.
    fn of(x: f64) -> Self;
    /// Widens to `f64` (exact for both implementors).
    fn to_f64(self) -> f64;
    /// `exp(x)` through a branch-free polynomial the compiler can vectorize (f32: within 2 ulp of
    /// the exact value, see [`exp_f32`]); the exact library `exp` for f64, so gradient checks in f64
    /// see the true function. Used by the hot kernels: softmax, attention, losses, GELU.
    #[inline]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    /// The logistic function `1 / (1 + exp(-x))` through [`Float::exp_fast`].
    #[inline]
    fn sigmoid_fast(self) -> Self {
        Self::one() / (Self::one() + (-self).exp_fast())
    }
}

/// `exp(x)` for f32 without a library call (Cephes' `expf` reduction and polynomial), written
/// without branches so loops over slices vectorize:
///
/// ```text
/// exp(x) = 2ⁿ · exp(r),   n = round(x / ln 2),   r = x − n ln 2 ∈ [−ln2/2, ln2/2]
/// exp(r) ≈ 1 + r + r² P(r)            (degree-5 P, relative error about 1e-7)
/// ```
///
/// `n` is rounded by adding and subtracting 1.5·2²³ (the sum's low mantissa bits then hold `n`),
/// and `2ⁿ` is built from its exponent bits. Inputs above 88.3 saturate at exp(88.3) (finite, as
/// every caller only ever feeds non-positive or bounded arguments); inputs below −87.3 give 0;
/// NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.3;
    const LO: f32 = -87.3;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two (Cody and Waite) so that n·ln2_hi is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let xc = if x > HI { HI } else { x };
    let xc = if xc < LO { LO } else { xc };
    let shifted = xc * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5; // Cephes: 5.0000001e-1, which is 0.5 in f32
    let er = p * (r * r) + r + 1.0;
    // 2ⁿ: the low bits of `shifted` hold n (two's complement); n + 127 is the biased exponent.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    let y = er * scale;
    if x < LO { 0.0 } else { y }
}

impl Float for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}

impl Float for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two positive finite f32.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_f32_is_within_two_ulp_of_the_exact_value() {
        // Every 97th f32 bit pattern in [-87.3, 88.3] (about 20 M values), rounded from f64's exp.
        let (mut worst, mut at) = (0, 0.0f32);
        for bits in (0u32..=u32::MAX).step_by(97) {
            let x = f32::from_bits(bits);
            if !(-87.3..=88.3).contains(&x) {
                continue;
            }
            let want = (x as f64).exp() as f32;
            let d = ulps(exp_f32(x), want);
            if d > worst {
                (worst, at) = (d, x);
            }
        }
        assert!(worst <= 2, "exp_f32 is {worst} ulp off at x = {at}");
    }

    #[test]
    fn exp_f32_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e4), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        // Just above the lower clamp the result is still a normal number.
        assert!(exp_f32(-87.0) > 0.0);
    }

    #[test]
    fn f64_exp_fast_is_the_library_exp() {
        for x in [-700.0, -3.5, 0.0, 1e-3, 2.0, 300.0] {
            assert_eq!(f64::exp_fast(x), x.exp());
        }
        assert_eq!(f64::sigmoid_fast(0.5), 1.0 / (1.0 + (-0.5f64).exp()));
    }
}
