//! pglm-autograd: reverse-mode automatic differentiation on ndarray tensors, for training small
//! transformers on a CPU.
//!
//! A [`Tape`] records operations as they run (a Wengert list); [`Tape::backward`] walks it in
//! reverse and returns [`Gradients`]. Values are `ndarray::ArrayD<F>` with `F` = `f32` (training)
//! or `f64` (gradient checks). Parameters live outside the tape in a [`ParamStore`], so the
//! optimizers in [`optim`] update them in place. Every op's backward is written by hand and checked
//! against finite differences by a property test (`cargo xtask gradcheck` prints the table).
//! A program that trains should call [`memory::keep_freed_memory`] once at start (see why there).
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use pglm_autograd::optim::{AdamW, Optimizer};
//! use pglm_autograd::{ParamStore, Tape};
//!
//! // y = tanh(x · W + b), loss = sum(y)
//! let mut params = ParamStore::<f32>::new();
//! let w = params.add("w", ArrayD::from_elem(IxDyn(&[3, 2]), 0.1));
//! let b = params.add("b", ArrayD::zeros(IxDyn(&[2])));
//!
//! let mut tape = Tape::new();
//! let x = tape.constant(ArrayD::from_elem(IxDyn(&[4, 3]), 1.0));
//! let (wv, bv) = (tape.param(&params, w), tape.param(&params, b));
//! let xw = tape.matmul(x, wv);
//! let z = tape.add(xw, bv);
//! let y = tape.tanh(z);
//! let loss = tape.sum_all(y);
//!
//! let grads = tape.backward(loss);
//! // d loss / d b = sum over rows of (1 - tanh(0.3)^2)
//! let db = grads.wrt(bv).unwrap();
//! assert!((db[[0]] - 4.0 * (1.0 - 0.3f32.tanh().powi(2))).abs() < 1e-5);
//!
//! grads.accumulate_into(&mut params);
//! tape.clear(); // release the tape's share of the weights before updating them in place
//! let mut opt = AdamW::new(1e-2);
//! opt.step(&mut params, 1e-2);
//! assert!(params.value(w)[[0, 0]] < 0.1);
//! ```

mod fill;
mod float;
pub mod memory;
pub mod ops;
pub mod optim;
mod params;
mod tape;
#[cfg(test)]
mod test_util;

#[cfg(any(test, feature = "gradcheck"))]
pub mod gradcheck;

pub use float::Float;
pub use params::{Param, ParamId, ParamStore};
pub use tape::{Gradients, Tape, Var};
