//! The RL trainer's checkpoint: weights (value head included), AdamW's state, and everything else
//! a resumed run needs to continue bit for bit: the step (which fixes the sampling seeds and the
//! schedule), the prompt order's position, REINFORCE's moving baseline, the adaptive KL
//! coefficient, the guard's counters and the clock. The reference policy is in its own file.

use pglm_model::GptConfig;
use serde::{Deserialize, Serialize};

use crate::data::DataCursor;
use crate::guard::GuardState;
use crate::rl::advantage::MovingBaseline;

/// The checkpoint kind of an RL run.
pub const RL_KIND: &str = "pglm.rl-state";

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RlMeta {
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// The policy's config (value head included when the run has a critic).
    pub model: GptConfig,
    /// The run's seed.
    pub seed: u64,
    /// RL steps completed.
    pub step: u64,
    /// The prompt order's position.
    pub cursor: DataCursor,
    /// REINFORCE's baseline.
    pub baseline: MovingBaseline,
    /// The KL coefficient in force (changes when adaptive).
    pub kl_coef: f64,
    /// The non-finite guard's counters.
    pub guard: GuardState,
    /// Wall-clock seconds so far.
    pub elapsed_s: f64,
}
