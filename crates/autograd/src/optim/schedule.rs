//! Learning-rate schedules as plain data: the trainer asks `lr_at(step)` and passes the result to
//! [`super::Optimizer::step`].

use serde::{Deserialize, Serialize};

use super::OptimError;

/// A learning rate as a function of the (0-based) optimizer step.
///
/// The warmup schedules follow nanoGPT's `get_lr`, with the warmup of Karpathy's build-nanogpt and
/// llm.c:
///
/// ```text
/// step < warmup:         lr = max_lr · (step + 1) / warmup           (reaches max_lr at step warmup − 1)
/// warmup ≤ step < decay: r = (step − warmup) / (decay − warmup)
///                        cosine: lr = min_lr + ½ (1 + cos(π r)) (max_lr − min_lr)
///                        linear: lr = min_lr + (1 − r) (max_lr − min_lr)
/// step ≥ decay:          lr = min_lr
/// ```
///
/// (nanoGPT's `train.py` divides by `warmup + 1` instead.) With `decay_steps ≤ warmup_steps` the rate
/// drops to `min_lr` right after the warmup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// Linear warmup to `max_lr`, then cosine decay to `min_lr` at `decay_steps`.
    WarmupCosine {
        /// Peak rate, reached at the end of the warmup.
        max_lr: f64,
        /// Final rate, from `decay_steps` on.
        min_lr: f64,
        /// Number of warmup steps (0 for none).
        warmup_steps: u64,
        /// Step at which the decay reaches `min_lr` (counted from step 0, warmup included).
        decay_steps: u64,
    },
    /// Linear warmup to `max_lr`, then linear decay to `min_lr` at `decay_steps`.
    WarmupLinear {
        /// Peak rate, reached at the end of the warmup.
        max_lr: f64,
        /// Final rate, from `decay_steps` on.
        min_lr: f64,
        /// Number of warmup steps (0 for none).
        warmup_steps: u64,
        /// Step at which the decay reaches `min_lr` (counted from step 0, warmup included).
        decay_steps: u64,
    },
}

/// The shape of the decay after the warmup.
#[derive(Clone, Copy)]
enum Decay {
    Cosine,
    Linear,
}

impl LrSchedule {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::WarmupCosine { max_lr, min_lr, warmup_steps, decay_steps } => {
                warmup_then_decay(step, max_lr, min_lr, warmup_steps, decay_steps, Decay::Cosine)
            }
            LrSchedule::WarmupLinear { max_lr, min_lr, warmup_steps, decay_steps } => {
                warmup_then_decay(step, max_lr, min_lr, warmup_steps, decay_steps, Decay::Linear)
            }
        }
    }

    /// Checks that the rates are finite, non-negative and `min_lr ≤ max_lr` (for schedules read from
    /// user configuration).
    pub fn validate(&self) -> Result<(), OptimError> {
        let (max_lr, min_lr) = match *self {
            LrSchedule::Constant { lr } => (lr, lr),
            LrSchedule::WarmupCosine { max_lr, min_lr, .. }
            | LrSchedule::WarmupLinear { max_lr, min_lr, .. } => (max_lr, min_lr),
        };
        if !(max_lr.is_finite() && min_lr.is_finite() && min_lr >= 0.0) {
            return Err(OptimError::InvalidSchedule(format!(
                "learning rates must be finite and non-negative, got max {max_lr}, min {min_lr}"
            )));
        }
        if min_lr > max_lr {
            return Err(OptimError::InvalidSchedule(format!("min_lr {min_lr} exceeds max_lr {max_lr}")));
        }
        Ok(())
    }
}

fn warmup_then_decay(step: u64, max_lr: f64, min_lr: f64, warmup: u64, decay: u64, shape: Decay) -> f64 {
    if step < warmup {
        // Linear warmup: max_lr · (step + 1) / warmup, never 0 at the first step.
        return max_lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= decay {
        return min_lr;
    }
    // r goes from 0 at the end of the warmup to 1 at `decay` (exclusive here, min_lr above).
    let r = (step - warmup) as f64 / (decay - warmup) as f64;
    let coeff = match shape {
        // ½ (1 + cos(π r)): from 1 to 0 along a half cosine.
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * r).cos()),
        Decay::Linear => 1.0 - r,
    };
    min_lr + coeff * (max_lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine() -> LrSchedule {
        LrSchedule::WarmupCosine { max_lr: 6e-4, min_lr: 6e-5, warmup_steps: 100, decay_steps: 1100 }
    }

    fn linear() -> LrSchedule {
        LrSchedule::WarmupLinear { max_lr: 1e-3, min_lr: 0.0, warmup_steps: 10, decay_steps: 110 }
    }

    fn assert_close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-15, "{a} vs {b}");
    }

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::Constant { lr: 3e-4 };
        for step in [0, 1, 1000, u64::MAX] {
            assert_eq!(s.lr_at(step), 3e-4);
        }
    }

    #[test]
    fn warmup_cosine_at_key_steps() {
        let s = cosine();
        // Step 0: 6e-4 · 1/100 = 6e-6; step 49: 6e-4 · 50/100 = 3e-4; step 99 (warmup end): 6e-4.
        assert_close(s.lr_at(0), 6e-6);
        assert_close(s.lr_at(49), 3e-4);
        assert_close(s.lr_at(99), 6e-4);
        // Step 100: r = 0, cos 0 = 1 → max_lr.
        assert_close(s.lr_at(100), 6e-4);
        // Step 600: r = 0.5, coeff = ½ → (6e-4 + 6e-5)/2 = 3.3e-4.
        assert_close(s.lr_at(600), 3.3e-4);
        // Step 350: r = 0.25, coeff = ½(1 + √½) = 0.853553... → 6e-5 + 0.853553·5.4e-4 = 5.20919e-4.
        assert!((s.lr_at(350) - 5.209_188e-4).abs() < 1e-9, "{}", s.lr_at(350));
        // Step 1099: r = 0.999, coeff = ½(1 + cos 0.999π) ≈ 2.4674e-6 → 6e-5 + 1.3324e-9, just above min.
        assert!((s.lr_at(1099) - (6e-5 + 1.3324e-9)).abs() < 1e-13, "{}", s.lr_at(1099));
        // 1100 (end) and beyond: min_lr.
        assert_eq!(s.lr_at(1100), 6e-5);
        assert_eq!(s.lr_at(1_000_000), 6e-5);
    }

    #[test]
    fn warmup_linear_at_key_steps() {
        let s = linear();
        assert_close(s.lr_at(0), 1e-4);
        assert_close(s.lr_at(9), 1e-3);
        assert_close(s.lr_at(10), 1e-3);
        // Step 60: r = 0.5 → 5e-4; step 85: r = 0.75 → 2.5e-4.
        assert_close(s.lr_at(60), 5e-4);
        assert_close(s.lr_at(85), 2.5e-4);
        assert_eq!(s.lr_at(110), 0.0);
        assert_eq!(s.lr_at(5000), 0.0);
    }

    #[test]
    fn is_monotone_after_warmup() {
        for s in [cosine(), linear()] {
            let lrs: Vec<f64> = (0..1200).map(|t| s.lr_at(t)).collect();
            let peak = lrs.iter().cloned().fold(0.0, f64::max);
            let top = lrs.iter().position(|&x| x == peak).unwrap();
            assert!(lrs[..=top].windows(2).all(|w| w[0] <= w[1]));
            assert!(lrs[top..].windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn degenerate_settings_do_not_divide_by_zero() {
        // No warmup: step 0 is already max_lr.
        let s = LrSchedule::WarmupCosine { max_lr: 1.0, min_lr: 0.1, warmup_steps: 0, decay_steps: 10 };
        assert_eq!(s.lr_at(0), 1.0);
        // Decay no longer than the warmup: min_lr right after the warmup.
        let s = LrSchedule::WarmupLinear { max_lr: 1.0, min_lr: 0.1, warmup_steps: 5, decay_steps: 5 };
        assert_eq!(s.lr_at(4), 1.0);
        assert_eq!(s.lr_at(5), 0.1);
        assert!((0..20).all(|t| s.lr_at(t).is_finite()));
    }

    #[test]
    fn validates_and_round_trips_through_serde() {
        assert!(cosine().validate().is_ok());
        let bad = LrSchedule::WarmupCosine { max_lr: 1e-4, min_lr: 1e-3, warmup_steps: 0, decay_steps: 1 };
        assert!(matches!(bad.validate(), Err(OptimError::InvalidSchedule(_))));
        assert!(LrSchedule::Constant { lr: f64::NAN }.validate().is_err());
        assert!(LrSchedule::Constant { lr: -1.0 }.validate().is_err());
        let json = serde_json::to_string(&cosine()).unwrap();
        assert!(json.starts_with("{\"warmup_cosine\":{"), "{json}");
        assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), cosine());
    }
}
