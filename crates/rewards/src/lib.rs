//! pglm-rewards: verifiable tasks, reward functions and dataset generators for policy-gradient RL.
//!
//! Rewards score text and know nothing of the model. A [`Reward`] scores one completion given its
//! prompt and the example's reference data, and returns a [`Score`] (a value, or
//! [`Score::Unscorable`], which the trainer leaves out of baselines) or a typed [`RewardError`].
//! Rewards are `Send + Sync`; [`Reward::score_batch`] scores a batch in parallel, in order.
//!
//! Built in: [`ExactMatch`] (normalised answers, `"042"` = `"42"`), [`Gsm8k`] (`#### <number>`,
//! strict and flexible), [`FormatReward`] (a regular expression), [`Countdown`] (TinyZero's
//! 0 / 0.1 / 1.0, judged in exact rationals by our own parser), [`LabelMatch`], [`EditDistance`],
//! [`OverlongPenalty`] (DAPO) and [`LengthPenalty`], [`WeightedSum`] (each part reported), and
//! [`ExternalReward`] (your program over JSON lines). The tasks in [`tasks`] generate examples from
//! a seed and name their reward; [`dataset`] writes and reads them as JSON lines. The exact
//! semantics of each reward are in `docs/REWARDS.md`.
//!
//! A custom reward takes a few lines, and composes with a format reward:
//!
//! ```
//! use pglm_rewards::{FormatReward, Reward, RewardError, RewardInput, Score, WeightedSum};
//! use serde_json::json;
//!
//! /// 1.0 when the answer tag holds the reference's `city`, ignoring case.
//! struct City;
//!
//! impl Reward for City {
//!     fn name(&self) -> &str {
//!         "city"
//!     }
//!     fn score(&self, x: &RewardInput<'_>) -> Result<Score, RewardError> {
//!         let want = pglm_rewards::reference::get_text(self.name(), x.reference, "city")?;
//!         let got = pglm_rewards::last_answer_tag(x.completion).unwrap_or("");
//!         Ok(Score::from(if got.trim().eq_ignore_ascii_case(&want) { 1.0 } else { 0.0 }))
//!     }
//! }
//!
//! let reward = WeightedSum::new().add(1.0, City).add(0.1, FormatReward::think_answer());
//!
//! let gold = json!({"city": "Paris"});
//! let done = "<think>France's capital.</think><answer>paris</answer>";
//! let batch = [RewardInput::new("Capital of France?", done, &gold)];
//! let scored = reward.score_batch(&batch).remove(0)?;
//! assert_eq!(scored.total, Score::Value(1.1));
//! assert_eq!(reward.component_names(), ["city", "format"]);
//! assert_eq!(scored.components, [Score::Value(1.0), Score::Value(1.0)]);
//! # Ok::<(), RewardError>(())
//! ```
//!
//! A closure works too: `reward_fn("short", |x| Ok((x.completion.len() < 20).then_some(1.0).unwrap_or(0.0).into()))`.

mod combine;
pub mod countdown;
pub mod dataset;
mod edit;
mod external;
mod format;
mod gsm8k;
mod length;
mod matching;
pub mod normalize;
pub mod reference;
mod reward;
pub mod rng;
pub mod tasks;

pub use combine::WeightedSum;
pub use countdown::Countdown;
pub use edit::{EditDistance, levenshtein};
pub use external::ExternalReward;
pub use format::FormatReward;
pub use gsm8k::{Gsm8k, Gsm8kMode, extract_gsm8k};
pub use length::{LengthPenalty, OverlongPenalty};
pub use matching::{ExactMatch, Extract, LabelMatch, last_answer_tag};
pub use reward::{
    FnReward, Reward, RewardError, RewardInput, Score, Scored, describe_example, reward_fn, score_checked,
};
pub use tasks::{Example, Task, TaskError, builtin_task};
