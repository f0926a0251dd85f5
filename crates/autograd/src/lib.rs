//! pglm-autograd: reverse-mode automatic differentiation on ndarray tensors.
//!
//! (crate documentation and doctest: see the end of issue 2; being written)

mod float;
pub mod ops;
pub mod optim;
mod params;
mod tape;

#[cfg(any(test, feature = "gradcheck"))]
pub mod gradcheck;

pub use float::Float;
pub use params::{Param, ParamId, ParamStore};
pub use tape::{Gradients, Tape, Var};
