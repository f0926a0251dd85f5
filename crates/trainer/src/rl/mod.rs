//! Policy-gradient reinforcement learning: REINFORCE, RLOO, GRPO (and Dr. GRPO, DAPO, GSPO),
//! REINFORCE++ and PPO with a critic, as one loop configured by [`RlConfig`].
//!
//! The mathematics are pure functions: advantage estimators ([`advantage`], plain `f64` on rollout
//! data) and the losses on the autograd tape ([`loss`]). A rollout batch has `N = n_prompts × G`
//! sequences, each prompt's `G` completions contiguous; token arrays are `(N, W)` with a mask that
//! is 1 on completion tokens (a final EOS included) and 0 elsewhere. Every formula, its source
//! (paper, TRL, verl) and the unbiasedness argument are in `docs/ALGORITHMS.md`; the loop around
//! them is in `docs/ARCHITECTURE.md`.

pub mod advantage;
pub mod config;
pub mod loss;
pub mod metrics;
pub mod policy;
pub mod rollout;
pub mod state;
mod step;
mod trainer;
pub mod update;

pub use config::{
    AlgorithmConfig, Estimator, FilterConfig, KlConfig, KlPlacement, LogConfig, PolicyConfig, RlConfig,
    RlTaskConfig, RolloutConfig, UpdateConfig,
};
pub use metrics::{CompletionRow, RlStepMetrics};
pub use trainer::RlTrainer;

/// The RL losses' finite-difference gradient checks, registered in `cargo xtask gradcheck`.
#[cfg(any(test, feature = "gradcheck"))]
pub fn gradcheck_cases() -> Vec<pglm_autograd::gradcheck::Case> {
    loss::gradcheck::cases()
}

#[cfg(test)]
mod tests {
    /// Every RL loss passes its gradient check (`PGLM_GRADCHECK_CASES` sets the count per case).
    #[test]
    fn rl_losses_pass_gradcheck() {
        let n = std::env::var("PGLM_GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
        let reports: Vec<_> =
            super::gradcheck_cases().iter().map(|c| pglm_autograd::gradcheck::run_case(c, n)).collect();
        let table = pglm_autograd::gradcheck::table(&reports);
        assert!(reports.iter().all(|r| r.failure.is_none()), "{table}");
        println!("{table}");
    }
}
