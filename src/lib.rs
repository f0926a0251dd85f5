//! pglm: policy-gradient reinforcement learning for small transformer language models.
//!
//! This root crate re-exports the workspace's crates so that one dependency brings the whole
//! stack. Import the single crates (`pglm-autograd`, `pglm-model`, ...) when you need only a part.
//!
//! ```
//! use pglm::autograd::Tape;
//! let mut tape = Tape::<f64>::new();
//! let x = tape.constant(ndarray::arr1(&[1.0, 2.0]).into_dyn());
//! assert_eq!(tape.value(x).len(), 2);
//! ```

pub use pglm_autograd as autograd;
pub use pglm_model as model;
pub use pglm_rewards as rewards;
pub use pglm_sampler as sampler;
pub use pglm_trainer as trainer;
