//! Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), with PyTorch's update rule.
//!
//! With gradient `g`, step `t` (from 1), learning rate `lr` and decay `λ` (zero for parameters whose
//! `decay` flag is false), one step of each is, per element:
//!
//! ```text
//! Adam:  g ← g + λ p                          (L2 penalty folded into the gradient)
//! AdamW: p ← p − lr λ p                       (decoupled decay, before the Adam update)
//! both:  m ← β1 m + (1 − β1) g
//!        v ← β2 v + (1 − β2) g²
//!        p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! The last line is `p ← p − lr · m̂ / (√v̂ + ε)` with `m̂ = m / (1 − β1ᵗ)`, `v̂ = v / (1 − β2ᵗ)`,
//! arranged as `torch.optim.Adam(W)` computes it (ε added after the bias correction of `√v`).

use ndarray::{ArrayD, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{CHUNK, OptimError, Optimizer, check_buffer, ensure_buffer};
use crate::{Float, ParamStore};

/// The state of [`Adam`] and [`AdamW`]: moment estimates per parameter (in store order) and the
/// number of steps taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamState<F> {
    /// Number of steps taken (`t` of the bias correction, after the step).
    pub step: u64,
    /// First-moment estimates `m`, one per parameter; empty before the first step.
    pub m: Vec<ArrayD<F>>,
    /// Second-moment estimates `v`, one per parameter; empty before the first step.
    pub v: Vec<ArrayD<F>>,
}

impl<F> Default for AdamState<F> {
    fn default() -> Self {
        AdamState { step: 0, m: Vec::new(), v: Vec::new() }
    }
}

/// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`).
///
/// Defaults (PyTorch's): `lr = 1e-3`, `betas = (0.9, 0.999)`, `eps = 1e-8`, `weight_decay = 0`.
/// The decay applies only to parameters whose `decay` flag is true.
#[derive(Clone, Debug)]
pub struct Adam<F> {
    /// Nominal learning rate. [`Optimizer::step`] uses its own `lr` argument; this is the value to
    /// pass when no schedule is used.
    pub lr: f64,
    /// Decay rates `(β1, β2)` of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// L2 penalty coefficient `λ` (gradient `g + λp`), for parameters with `decay` set.
    pub weight_decay: f64,
    state: AdamState<F>,
}

/// Adam with decoupled weight decay (`torch.optim.AdamW`).
///
/// Defaults (PyTorch's): `lr = 1e-3`, `betas = (0.9, 0.999)`, `eps = 1e-8`, `weight_decay = 0.01`
/// (nanoGPT uses 0.1). The decay applies only to parameters whose `decay` flag is true: by default
/// matrices and embeddings, not biases or LayerNorm gains.
#[derive(Clone, Debug)]
pub struct AdamW<F> {
    /// Nominal learning rate. [`Optimizer::step`] uses its own `lr` argument; this is the value to
    /// pass when no schedule is used.
    pub lr: f64,
    /// Decay rates `(β1, β2)` of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled decay coefficient `λ` (`p ← p − lr λ p`), for parameters with `decay` set.
    pub weight_decay: f64,
    state: AdamState<F>,
}

/// How the weight decay enters the update.
#[derive(Clone, Copy)]
enum DecayRule {
    /// Adam: `g ← g + λp`.
    L2,
    /// AdamW: `p ← (1 − lr λ) p`.
    Decoupled,
}

/// The per-tensor scalars of one step, converted to the element type once.
struct Coeffs<F> {
    beta1: F,
    beta2: F,
    one_minus_beta1: F,
    one_minus_beta2: F,
    /// `λ` of the L2 term (zero for AdamW and for decay-free parameters).
    l2: F,
    /// `1 − lr λ` of the decoupled decay (one for Adam and for decay-free parameters).
    shrink: F,
    /// `lr / (1 − β1ᵗ)`.
    step_size: F,
    /// `√(1 − β2ᵗ)`.
    bc2_sqrt: F,
    eps: F,
}

macro_rules! adam_common_impl {
    ($name:ident, $decay_default:expr, $rule:expr) => {
        impl<F: Float> Default for $name<F> {
            fn default() -> Self {
                $name {
                    lr: 1e-3,
                    betas: (0.9, 0.999),
                    eps: 1e-8,
                    weight_decay: $decay_default,
                    state: AdamState::default(),
                }
            }
        }

        impl<F: Float> $name<F> {
            /// The optimizer with PyTorch's defaults and nominal learning rate `lr`.
            pub fn new(lr: f64) -> Self {
                $name { lr, ..Self::default() }
            }

            /// Sets `(β1, β2)`.
            pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
                self.betas = (beta1, beta2);
                self
            }

            /// Sets `ε`.
            pub fn with_eps(mut self, eps: f64) -> Self {
                self.eps = eps;
                self
            }

            /// Sets the weight-decay coefficient `λ`.
            pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
                self.weight_decay = weight_decay;
                self
            }
        }

        impl<F: Float> Optimizer<F> for $name<F> {
            type State = AdamState<F>;

            fn step(&mut self, store: &mut ParamStore<F>, lr: f64) {
                adam_step(&mut self.state, store, lr, self.betas, self.eps, self.weight_decay, $rule);
            }

            fn steps(&self) -> u64 {
                self.state.step
            }

            fn state(&self) -> &AdamState<F> {
                &self.state
            }

            fn load_state(&mut self, state: AdamState<F>, store: &ParamStore<F>) -> Result<(), OptimError> {
                check_buffer("m", &state.m, store)?;
                check_buffer("v", &state.v, store)?;
                self.state = state;
                Ok(())
            }
        }
    };
}

adam_common_impl!(Adam, 0.0, DecayRule::L2);
adam_common_impl!(AdamW, 0.01, DecayRule::Decoupled);

/// One Adam(W) step over every parameter of the store.
fn adam_step<F: Float>(
    state: &mut AdamState<F>,
    store: &mut ParamStore<F>,
    lr: f64,
    (beta1, beta2): (f64, f64),
    eps: f64,
    weight_decay: f64,
    rule: DecayRule,
) {
    ensure_buffer("m", &mut state.m, store);
    ensure_buffer("v", &mut state.v, store);
    state.step += 1;
    // Bias corrections 1 − βᵗ, computed in f64 like PyTorch's Python scalars.
    let t = state.step as f64;
    let bc1 = 1.0 - beta1.powf(t);
    let bc2 = 1.0 - beta2.powf(t);
    for (((_, param), m), v) in store.iter_mut().zip(&mut state.m).zip(&mut state.v) {
        let lambda = if param.decay { weight_decay } else { 0.0 };
        let (l2, shrink) = match rule {
            DecayRule::L2 => (lambda, 1.0),
            DecayRule::Decoupled => (0.0, 1.0 - lr * lambda),
        };
        let c = Coeffs {
            beta1: F::of(beta1),
            beta2: F::of(beta2),
            one_minus_beta1: F::of(1.0 - beta1),
            one_minus_beta2: F::of(1.0 - beta2),
            l2: F::of(l2),
            shrink: F::of(shrink),
            step_size: F::of(lr / bc1),
            bc2_sqrt: F::of(bc2.sqrt()),
            eps: F::of(eps),
        };
        let (value, grad) = param.value_and_grad_mut();
        update_tensor(value, grad, m, v, &c);
    }
}

/// Applies the update to one tensor: over contiguous chunks in parallel when all four buffers are
/// row-major (always, unless a parameter was added with a permuted layout), element by element
/// otherwise.
fn update_tensor<F: Float>(
    value: &mut ArrayD<F>,
    grad: &ArrayD<F>,
    m: &mut ArrayD<F>,
    v: &mut ArrayD<F>,
    c: &Coeffs<F>,
) {
    let contiguous = value.is_standard_layout()
        && grad.is_standard_layout()
        && m.is_standard_layout()
        && v.is_standard_layout();
    if !contiguous {
        Zip::from(value).and(grad).and(m).and(v).for_each(|p, &g, m, v| update_element(p, g, m, v, c));
        return;
    }
    let p = value.as_slice_mut().expect("standard layout");
    let g = grad.as_slice().expect("standard layout");
    let m = m.as_slice_mut().expect("standard layout");
    let v = v.as_slice_mut().expect("standard layout");
    if p.len() <= CHUNK {
        update_slice(p, g, m, v, c);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update_slice(p, g, m, v, c));
    }
}

/// The update over matching slices (a plain loop the compiler can vectorize).
fn update_slice<F: Float>(p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], c: &Coeffs<F>) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        update_element(p, g, m, v, c);
    }
}

/// The Adam(W) update of one element.
#[inline(always)]
fn update_element<F: Float>(p: &mut F, g: F, m: &mut F, v: &mut F, c: &Coeffs<F>) {
    // Adam's L2 penalty: g ← g + λ p (λ = 0 under AdamW). Uses p before this step's change.
    let g = g + c.l2 * *p;
    // AdamW's decoupled decay: p ← (1 − lr λ) p (factor 1 under Adam).
    *p *= c.shrink;
    // m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²
    *m = c.beta1 * *m + c.one_minus_beta1 * g;
    *v = c.beta2 * *v + c.one_minus_beta2 * g * g;
    // p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
    *p -= c.step_size * *m / (v.sqrt() / c.bc2_sqrt + c.eps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{scalar, set_grads, two_param_store};
    use ndarray::{ArrayD, IxDyn, ShapeBuilder, arr1};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    // Hand computation, lr 0.1, betas (0.9, 0.999), eps 1e-8, p0 = 1, g1 = 0.5, g2 = -1, no decay:
    // step 1: m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25, p = 1 - 0.1·0.5/(0.5 + 1e-8) = 0.900000002
    // step 2: m = 0.045 - 0.1 = -0.055, v = 0.00024975 + 0.001 = 0.00124975,
    //         p = p1 - (0.1/0.19)·(-0.055)/(√0.00124975/√0.001999 + 1e-8) = 0.93661035...
    const P1: f64 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
    fn p2_from(p1: f64) -> f64 {
        p1 - (0.1 / 0.19) * -0.055 / (0.00124975f64.sqrt() / 0.001999f64.sqrt() + 1e-8)
    }

    #[test]
    fn adam_two_steps_match_hand_computation() {
        let mut store = two_param_store();
        let mut opt = Adam::<f64>::new(0.1);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        assert!(close(scalar(&store, "w"), P1), "{}", scalar(&store, "w"));
        assert!(close(scalar(&store, "w"), 0.900000002), "{}", scalar(&store, "w"));
        set_grads(&mut store, -1.0);
        opt.step(&mut store, 0.1);
        let p2 = scalar(&store, "w");
        assert!(close(p2, p2_from(P1)), "{p2}");
        assert!((p2 - 0.936_610_354).abs() < 1e-8, "{p2}");
        assert_eq!(opt.steps(), 2);
        assert_eq!(scalar(&store, "b"), p2, "no decay anywhere: both params move alike");
    }

    #[test]
    fn adamw_two_steps_match_hand_computation_and_decay_only_matrices() {
        // λ = 0.1: the matrix shrinks by (1 - 0.1·0.1) = 0.99 before each Adam update; the bias does not.
        let mut store = two_param_store();
        let mut opt = AdamW::<f64>::new(0.1).with_weight_decay(0.1);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        // w1 = 0.99·1 - 0.1·0.5/(0.5 + 1e-8) = 0.890000002
        let w1 = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!(close(scalar(&store, "w"), w1));
        assert!(close(scalar(&store, "b"), P1));
        set_grads(&mut store, -1.0);
        opt.step(&mut store, 0.1);
        // w2 = 0.99·w1 + 0.0366103... (the same moments as Adam: decoupled decay leaves g alone)
        assert!(close(scalar(&store, "w"), p2_from(0.99 * w1)));
        assert!(close(scalar(&store, "b"), p2_from(P1)));
    }

    #[test]
    fn adam_l2_decay_enters_the_gradient_only_for_decay_params() {
        // λ = 0.1, lr 0.1, p0 = 1, g1 = 0.5 → g = 0.6 for w; one step of Adam moves by lr·ĝ/(|ĝ| + ε)
        // whatever the gradient's size, so compare the moments instead: m = 0.1·0.6 = 0.06 for w.
        let mut store = two_param_store();
        let mut opt = Adam::<f64>::new(0.1).with_weight_decay(0.1);
        set_grads(&mut store, 0.5);
        opt.step(&mut store, 0.1);
        let m = &opt.state().m;
        assert!(close(m[0][IxDyn(&[0, 0])], 0.06), "{}", m[0]);
        assert!(close(m[1][IxDyn(&[0])], 0.05), "{}", m[1]);
        // Step 1 moved w by lr·m̂/(√v̂ + ε) with m̂ = 0.6, √v̂ = 0.6: w1 = 1 − 0.1·0.6/(0.6 + 1e-8).
        let w1 = 1.0 - 0.1 * 0.6 / (0.6 + 1e-8);
        assert!(close(scalar(&store, "w"), w1));
        // Step 2 with g = −1: w sees g = −1 + 0.1·w1 (the L2 term uses p before the step).
        set_grads(&mut store, -1.0);
        opt.step(&mut store, 0.1);
        let g = -1.0 + 0.1 * w1;
        let (m2, v2) = (0.9 * 0.06 + 0.1 * g, 0.999 * 0.00036 + 0.001 * g * g);
        let w2 = w1 - (0.1 / 0.19) * m2 / (v2.sqrt() / 0.001999f64.sqrt() + 1e-8);
        assert!(close(scalar(&store, "w"), w2), "{} vs {w2}", scalar(&store, "w"));
        assert!(close(scalar(&store, "b"), p2_from(P1)));
    }

    #[test]
    fn adamw_converges_on_a_quadratic() {
        // f(p) = ½ Σ aᵢ (pᵢ − cᵢ)², ∇f = a ⊙ (p − c); a vector, so no decay pulls it off the minimum.
        let a = arr1(&[1.0, 10.0, 0.1, 3.0]).into_dyn();
        let c = arr1(&[0.5, -2.0, 3.0, 0.0]).into_dyn();
        let mut store = ParamStore::<f32>::new();
        let id = store.add("p", ArrayD::zeros(IxDyn(&[4])));
        let mut opt = AdamW::<f32>::default();
        let schedule = super::super::LrSchedule::WarmupCosine {
            max_lr: 0.05,
            min_lr: 1e-4,
            warmup_steps: 10,
            decay_steps: 2000,
        };
        for step in 0..2200 {
            let p = store.value(id).mapv(f64::from);
            let g = &a * &(&p - &c);
            store.get_mut(id).grad = g.mapv(|x| x as f32);
            opt.step(&mut store, schedule.lr_at(step));
        }
        let p = store.value(id);
        for (x, t) in p.iter().zip(c.iter()) {
            assert!((f64::from(*x) - t).abs() < 1e-3, "{p} vs {c}");
        }
    }

    #[test]
    fn parallel_chunks_match_the_element_loop() {
        // A tensor spanning several chunks goes through rayon; a permuted (non-row-major) copy of the
        // same data goes through the Zip fallback. Both must agree exactly.
        let n = CHUNK + 17;
        let value = ArrayD::from_shape_fn(IxDyn(&[2, n]), |i| ((i[0] * n + i[1]) as f32 * 0.37).sin());
        let grad = ArrayD::from_shape_fn(IxDyn(&[2, n]), |i| ((i[0] * n + i[1]) as f32 * 0.11).cos());
        let mut fast = ParamStore::<f32>::new();
        fast.add("w", value.clone());
        fast.get_mut(crate::ParamId(0)).grad = grad.clone();
        // The same values in column-major memory order.
        let mut column_major = ArrayD::zeros(IxDyn(&[2, n]).f());
        column_major.assign(&value);
        assert!(!column_major.is_standard_layout());
        let mut slow = ParamStore::<f32>::new();
        slow.add("w", column_major);
        slow.get_mut(crate::ParamId(0)).grad = grad;
        let (mut o1, mut o2) = (AdamW::<f32>::default(), AdamW::<f32>::default());
        for _ in 0..3 {
            o1.step(&mut fast, 1e-2);
            o2.step(&mut slow, 1e-2);
        }
        assert_eq!(fast.value(crate::ParamId(0)), slow.value(crate::ParamId(0)));
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut store = two_param_store();
        let mut opt = AdamW::<f64>::default();
        for g in [0.3, -0.7] {
            set_grads(&mut store, g);
            opt.step(&mut store, 1e-2);
        }
        let json = serde_json::to_string(opt.state()).unwrap();
        let saved: AdamState<f64> = serde_json::from_str(&json).unwrap();
        let mut resumed = AdamW::<f64>::default();
        resumed.load_state(saved, &store).unwrap();
        assert_eq!(resumed.steps(), 2);
        let mut store2 = two_param_store();
        for (_, p) in store2.iter_mut() {
            let src = store.value(store.id(&p.name).unwrap()).clone();
            *p.value_mut() = src;
        }
        set_grads(&mut store, 0.9);
        set_grads(&mut store2, 0.9);
        opt.step(&mut store, 1e-2);
        resumed.step(&mut store2, 1e-2);
        for name in ["w", "b"] {
            assert!(close(scalar(&store, name), scalar(&store2, name)));
        }
    }

    #[test]
    fn loading_state_of_other_shapes_is_a_typed_error() {
        let mut a = ParamStore::<f32>::new();
        a.add("h.0.mlp.c_fc.weight", ArrayD::zeros(IxDyn(&[2, 3])));
        let mut b = ParamStore::<f32>::new();
        b.add("h.0.mlp.c_fc.weight", ArrayD::zeros(IxDyn(&[3, 2])));
        let mut opt = Adam::<f32>::default();
        opt.step(&mut a, 1e-3);
        let mut other = Adam::<f32>::default();
        let err = other.load_state(opt.state().clone(), &b).unwrap_err();
        assert_eq!(
            err,
            OptimError::ShapeMismatch {
                buffer: "m",
                name: "h.0.mlp.c_fc.weight".into(),
                state: vec![2, 3],
                param: vec![3, 2],
            }
        );
        assert!(err.to_string().contains("h.0.mlp.c_fc.weight"), "{err}");
        assert_eq!(other.steps(), 0, "a failed load leaves the state alone");
        b.add("extra", ArrayD::zeros(IxDyn(&[1])));
        let err = other.load_state(opt.state().clone(), &b).unwrap_err();
        assert_eq!(err, OptimError::ParamCount { buffer: "m", state: 1, store: 2 });
    }

    #[test]
    #[should_panic(expected = "Optimizer::step")]
    fn stepping_another_store_panics() {
        let mut a = ParamStore::<f32>::new();
        a.add("w", ArrayD::zeros(IxDyn(&[2, 3])));
        let mut b = ParamStore::<f32>::new();
        b.add("w", ArrayD::zeros(IxDyn(&[2, 4])));
        let mut opt = AdamW::<f32>::default();
        opt.step(&mut a, 1e-3);
        opt.step(&mut b, 1e-3);
    }
}
