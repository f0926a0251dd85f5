//! Stochastic gradient descent with momentum, PyTorch's `torch.optim.SGD` with dampening 0.
//!
//! With gradient `g`, learning rate `lr`, momentum `μ` and decay `λ` (zero for parameters whose
//! `decay` flag is false), one step is, per element:
//!
//! ```text
//! g ← g + λ p                       (L2 weight decay)
//! b ← μ b + g                       (velocity; b = g at the first step, as from b = 0)
//! d ← g + μ b  if Nesterov,  else  d ← b
//! p ← p − lr d
//! ```
//!
//! With `μ = 0` this is plain SGD `p ← p − lr g` and no velocity is stored.

use ndarray::{ArrayD, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{CHUNK, OptimError, Optimizer, check_buffer, ensure_buffer};
use crate::{Float, ParamStore};

/// The state of [`Sgd`]: the velocity per parameter (in store order) and the number of steps taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdState<F> {
    /// Number of steps taken.
    pub step: u64,
    /// Momentum buffers `b`, one per parameter; empty before the first step or when `μ = 0`.
    pub velocity: Vec<ArrayD<F>>,
}

impl<F> Default for SgdState<F> {
    fn default() -> Self {
        SgdState { step: 0, velocity: Vec::new() }
    }
}

/// SGD with optional (Nesterov) momentum and L2 weight decay (`torch.optim.SGD`, dampening 0).
///
/// Weight decay applies only to parameters whose `decay` flag is true.
#[derive(Clone, Debug)]
pub struct Sgd<F> {
    /// Nominal learning rate. [`Optimizer::step`] uses its own `lr` argument; this is the value to
    /// pass when no schedule is used.
    pub lr: f64,
    /// Momentum factor `μ` (0 disables the velocity).
    pub momentum: f64,
    /// Nesterov momentum: step along `g + μ b` instead of `b` (no effect when `μ = 0`).
    pub nesterov: bool,
    /// L2 penalty coefficient `λ` (gradient `g + λp`), for parameters with `decay` set.
    pub weight_decay: f64,
    state: SgdState<F>,
}

impl<F: Float> Sgd<F> {
    /// Plain SGD (no momentum, no decay) with nominal learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, nesterov: false, weight_decay: 0.0, state: SgdState::default() }
    }

    /// Sets the momentum factor `μ`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Sets the weight-decay coefficient `λ`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

/// The per-tensor scalars of one step, in the element type.
struct Coeffs<F> {
    lr: F,
    momentum: F,
    l2: F,
    nesterov: bool,
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    type State = SgdState<F>;

    fn step(&mut self, store: &mut ParamStore<F>, lr: f64) {
        let with_momentum = self.momentum != 0.0;
        if with_momentum {
            ensure_buffer("velocity", &mut self.state.velocity, store);
        }
        self.state.step += 1;
        for (id, param) in store.iter_mut() {
            let c = Coeffs {
                lr: F::of(lr),
                momentum: F::of(self.momentum),
                l2: F::of(if param.decay { self.weight_decay } else { 0.0 }),
                nesterov: self.nesterov,
            };
            let (value, grad) = param.value_and_grad_mut();
            if with_momentum {
                momentum_tensor(value, grad, &mut self.state.velocity[id.0], &c);
            } else {
                plain_tensor(value, grad, &c);
            }
        }
    }

    fn steps(&self) -> u64 {
        self.state.step
    }

    fn state(&self) -> &SgdState<F> {
        &self.state
    }

    fn load_state(&mut self, state: SgdState<F>, store: &ParamStore<F>) -> Result<(), OptimError> {
        check_buffer("velocity", &state.velocity, store)?;
        self.state = state;
        Ok(())
    }
}

/// `p ← p − lr (g + λp)` over one tensor.
fn plain_tensor<F: Float>(value: &mut ArrayD<F>, grad: &ArrayD<F>, c: &Coeffs<F>) {
    let update = |p: &mut F, g: F| *p -= c.lr * (g + c.l2 * *p);
    if !(value.is_standard_layout() && grad.is_standard_layout()) {
        Zip::from(value).and(grad).for_each(|p, &g| update(p, g));
        return;
    }
    let p = value.as_slice_mut().expect("standard layout");
    let g = grad.as_slice().expect("standard layout");
    let kernel = |p: &mut [F], g: &[F]| p.iter_mut().zip(g).for_each(|(p, &g)| update(p, g));
    if p.len() <= CHUNK {
        kernel(p, g);
    } else {
        p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(p, g)| kernel(p, g));
    }
}

/// The momentum update over one tensor and its velocity.
fn momentum_tensor<F: Float>(
    value: &mut ArrayD<F>,
    grad: &ArrayD<F>,
    velocity: &mut ArrayD<F>,
    c: &Coeffs<F>,
) {
    let contiguous = value.is_standard_layout() && grad.is_standard_layout() && velocity.is_standard_layout();
    if !contiguous {
        Zip::from(value).and(grad).and(velocity).for_each(|p, &g, b| momentum_element(p, g, b, c));
        return;
    }
    let p = value.as_slice_mut().expect("standard layout");
    let g = grad.as_slice().expect("standard layout");
    let b = velocity.as_slice_mut().expect("standard layout");
    let kernel = |p: &mut [F], g: &[F], b: &mut [F]| {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
            momentum_element(p, g, b, c);
        }
    };
    if p.len() <= CHUNK {
        kernel(p, g, b);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(b.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| kernel(p, g, b));
    }
}

/// The momentum update of one element.
#[inline(always)]
fn momentum_element<F: Float>(p: &mut F, g: F, b: &mut F, c: &Coeffs<F>) {
    // g ← g + λ p
    let g = g + c.l2 * *p;
    // b ← μ b + g (dampening 0)
    *b = c.momentum * *b + g;
    // d ← g + μ b (Nesterov) or b
    let d = if c.nesterov { g + c.momentum * *b } else { *b };
    // p ← p − lr d
    *p -= c.lr * d;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{scalar, set_grads, two_param_store};
    use ndarray::IxDyn;

    fn assert_close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12, "{a} vs {b}");
    }

    #[test]
    fn plain_sgd_with_decay_on_matrices_only() {
        // lr 0.1, λ 0.1, p0 = 1, g = 0.5: w ← 1 − 0.1·(0.5 + 0.1) = 0.94, b ← 1 − 0.1·0.5 = 0.95;
        // step 2: w ← 0.94 − 0.1·(0.5 + 0.094) = 0.8806, b ← 0.95 − 0.05 = 0.9.
        let mut store = two_param_store();
        let mut opt = Sgd::<f64>::new(0.1).with_weight_decay(0.1);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "w"), 0.94);
        assert_close(scalar(&store, "b"), 0.95);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "w"), 0.8806);
        assert_close(scalar(&store, "b"), 0.9);
        assert!(opt.state().velocity.is_empty(), "no velocity without momentum");
        assert_eq!(opt.steps(), 2);
    }

    #[test]
    fn momentum_two_steps() {
        // μ 0.9, lr 0.1, p0 = 1, g1 = 0.5, g2 = −1:
        // step 1: b = 0.5,              p = 1 − 0.05 = 0.95
        // step 2: b = 0.45 − 1 = −0.55, p = 0.95 + 0.055 = 1.005
        let mut store = two_param_store();
        let mut opt = Sgd::<f64>::new(0.1).with_momentum(0.9);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "b"), 0.95);
        set_grads(&mut store, -1.0);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "b"), 1.005);
        assert_close(opt.state().velocity[1][IxDyn(&[0])], -0.55);
    }

    #[test]
    fn nesterov_two_steps() {
        // μ 0.9, lr 0.1, p0 = 1, g1 = 0.5, g2 = −1:
        // step 1: b = 0.5,   d = 0.5 + 0.45 = 0.95,    p = 1 − 0.095 = 0.905
        // step 2: b = −0.55, d = −1 − 0.495 = −1.495,  p = 0.905 + 0.1495 = 1.0545
        let mut store = two_param_store();
        let mut opt = Sgd::<f64>::new(0.1).with_momentum(0.9).with_nesterov(true);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "b"), 0.905);
        set_grads(&mut store, -1.0);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "b"), 1.0545);
    }

    #[test]
    fn momentum_with_decay_uses_the_decayed_gradient() {
        // μ 0.9, λ 0.1, lr 0.1, w0 = 1, g = 0.5 twice:
        // step 1: g = 0.6, b = 0.6, w = 0.94
        // step 2: g = 0.5 + 0.094 = 0.594, b = 0.54 + 0.594 = 1.134, w = 0.94 − 0.1134 = 0.8266
        let mut store = two_param_store();
        let mut opt = Sgd::<f64>::new(0.1).with_momentum(0.9).with_weight_decay(0.1);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        opt.step(&mut store, 0.1);
        assert_close(scalar(&store, "w"), 0.8266);
        // b: b = 0.5, then 0.95; p = 0.95 then 0.855.
        assert_close(scalar(&store, "b"), 0.855);
    }

    #[test]
    fn state_round_trips_and_rejects_other_shapes() {
        let mut store = two_param_store();
        let mut opt = Sgd::<f64>::new(0.1).with_momentum(0.9);
        set_grads(&mut store, 0.25);
        opt.step(&mut store, 0.1);
        let json = serde_json::to_string(opt.state()).unwrap();
        let saved: SgdState<f64> = serde_json::from_str(&json).unwrap();
        assert_eq!(&saved, opt.state());
        let mut resumed = Sgd::<f64>::new(0.1).with_momentum(0.9);
        resumed.load_state(saved.clone(), &store).unwrap();
        assert_eq!(resumed.steps(), 1);

        let mut other = ParamStore::<f64>::new();
        other.add("w", ArrayD::zeros(IxDyn(&[1, 2])));
        other.add("b", ArrayD::zeros(IxDyn(&[1])));
        let err = resumed.load_state(saved, &other).unwrap_err();
        assert_eq!(
            err,
            OptimError::ShapeMismatch {
                buffer: "velocity",
                name: "w".into(),
                state: vec![1, 1],
                param: vec![1, 2]
            }
        );
    }
}
