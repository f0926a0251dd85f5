//! Fixtures shared by the unit tests of several op modules.

use ndarray::{ArrayD, IxDyn};

/// Deterministic values in [-1, 1) from an xorshift stream: test data, not randomness.
pub(crate) fn filled(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    })
}
