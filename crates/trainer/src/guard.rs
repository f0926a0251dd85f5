//! The non-finite guard: a step whose loss or gradient norm is NaN or infinite is skipped (no
//! optimizer update), logged and counted; too many in a row stop the run.

use serde::{Deserialize, Serialize};

/// The guard's counters (saved in checkpoints, so a resumed run counts on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardState {
    /// Non-finite steps since the last good one.
    pub in_a_row: u32,
    /// Non-finite steps in the whole run.
    pub total: u64,
}

/// What to do with a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Finite: apply the update.
    Apply,
    /// Non-finite `what`: skip the update and go on.
    Skip {
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
    },
    /// Non-finite `what` for the limit's worth of steps in a row: stop.
    Stop {
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
    },
}

/// Counts non-finite steps against a limit.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Steps in a row that stop the run.
    pub limit: u32,
    /// The counters.
    pub state: GuardState,
}

impl Guard {
    /// A guard that stops after `limit` non-finite steps in a row.
    pub fn new(limit: u32) -> Self {
        Guard { limit, state: GuardState::default() }
    }

    /// Judges a step by its loss and its gradient norm (before clipping).
    pub fn check(&mut self, loss: f64, grad_norm: f64) -> Verdict {
        let what = if !loss.is_finite() {
            "loss"
        } else if !grad_norm.is_finite() {
            "gradient norm"
        } else {
            self.state.in_a_row = 0;
            return Verdict::Apply;
        };
        self.state.in_a_row += 1;
        self.state.total += 1;
        if self.state.in_a_row >= self.limit { Verdict::Stop { what } } else { Verdict::Skip { what } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_a_row_and_resets_on_a_good_step() {
        let mut g = Guard::new(2);
        assert_eq!(g.check(1.0, 1.0), Verdict::Apply);
        assert_eq!(g.check(f64::NAN, 1.0), Verdict::Skip { what: "loss" });
        assert_eq!(g.check(1.0, 2.0), Verdict::Apply);
        assert_eq!(g.check(1.0, f64::INFINITY), Verdict::Skip { what: "gradient norm" });
        assert_eq!(g.check(f64::NAN, f64::NAN), Verdict::Stop { what: "loss" });
        assert_eq!(g.state, GuardState { in_a_row: 2, total: 3 });
    }
}
