//! Advantage estimators: how much better than expected each sampled completion (or token) was.
//!
//! Everything here is plain `f64` arithmetic on rollout data, off the autograd tape: advantages are
//! constants of the policy-gradient loss (see [`crate::rl::loss`]).
//!
//! Conventions: a batch has `N = n_prompts × G` sequences with each prompt's `G` completions
//! contiguous (rows `g*G .. (g+1)*G`). Token-level arrays are `(N, L)`, padded to the longest
//! completion; `mask` is 1 on completion tokens (a final EOS included) and 0 on padding.
//!
//! - Outcome (one number per sequence), in [`outcome`]: [`rloo`], [`grpo`], [`group_centered`],
//!   [`MovingBaseline`], spread over the tokens by [`broadcast`].
//! - Token level, in [`token`]: [`token_rewards`] (score at the last token, −β·KL on every token),
//!   [`returns_to_go`], [`whiten`], [`reinforce_pp`], [`reinforce_pp_baseline`] and [`gae`].
//!
//! Shape mismatches are programmer errors and panic with a message naming the function and shapes.
//! Sums run sequentially in row-major order, so results never depend on the thread count.

pub mod outcome;
pub mod token;

pub use outcome::{MovingBaseline, StdScale, broadcast, group_centered, grpo, rloo};
pub use token::{gae, reinforce_pp, reinforce_pp_baseline, returns_to_go, token_rewards, whiten};
