//! Three-step trajectories checked against `torch.optim` (PyTorch 2.x, float64).
//!
//! The expected values come from this PyTorch program (two parameter groups, so that the bias has
//! no weight decay, and the learning rate changed before each step as a schedule would):
//!
//! ```text
//! W = Parameter(tensor([[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]]));  b = Parameter(tensor([0.1, -0.2, 0.3]))
//! opt = AdamW([{"params": [W], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
//!             lr=1e-2, betas=(0.9, 0.95), eps=1e-8)          # also Adam(...) and
//!                                                             # SGD(..., momentum=0.9, nesterov=True)
//! for t, lr in enumerate([1e-2, 5e-3, 2e-3]):
//!     W.grad = [[sin(0.7 i + t) for i in 0..3], [cos(0.3 i - t) for i in 0..3]]
//!     b.grad = [sin(1.1 i + 2 t) for i in 0..3]
//!     (set lr in each group); opt.step()
//! ```

use ndarray::{ArrayD, IxDyn, arr1, arr2};

use super::{Adam, AdamW, Optimizer, Sgd};
use crate::{ParamId, ParamStore};

fn run(opt: &mut impl Optimizer<f64>) -> ParamStore<f64> {
    let mut store = ParamStore::new();
    let w = store.add("W", arr2(&[[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]]).into_dyn());
    let b = store.add("b", arr1(&[0.1, -0.2, 0.3]).into_dyn());
    for (t, lr) in [1e-2, 5e-3, 2e-3].into_iter().enumerate() {
        let t = t as f64;
        store.get_mut(w).grad = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |ix| {
            let i = ix[1] as f64;
            if ix[0] == 0 { (0.7 * i + t).sin() } else { (0.3 * i - t).cos() }
        });
        store.get_mut(b).grad = ArrayD::from_shape_fn(IxDyn(&[3]), |ix| (1.1 * ix[0] as f64 + 2.0 * t).sin());
        opt.step(&mut store, lr);
    }
    store
}

fn assert_matches(store: &ParamStore<f64>, w: [f64; 6], b: [f64; 3]) {
    let got: Vec<f64> = store.value(ParamId(0)).iter().chain(store.value(ParamId(1))).copied().collect();
    for (g, want) in got.iter().zip(w.iter().chain(&b)) {
        assert!((g - want).abs() <= 1e-14, "{got:?}\n vs torch {w:?} {b:?}");
    }
}

#[test]
fn adamw_matches_torch() {
    let mut opt = AdamW::new(1e-2).with_betas(0.9, 0.95).with_weight_decay(0.1);
    let store = run(&mut opt);
    #[rustfmt::skip]
    assert_matches(
        &store,
        [0.49377989519310983, -1.0150925227010419, 1.9804970941907574,
         -0.01568457985142361, 0.2332220271078498, -0.7654437529377954],
        [0.09625935517200476, -0.21339971424963608, 0.2906809430948887],
    );
}

#[test]
fn adam_matches_torch() {
    let mut opt = Adam::new(1e-2).with_betas(0.9, 0.95).with_weight_decay(0.1);
    let store = run(&mut opt);
    #[rustfmt::skip]
    assert_matches(
        &store,
        [0.4844109018872947, -1.0167348329224397, 1.983586195893091,
         -0.015688679754097015, 0.2336056223884728, -0.7666658117205922],
        [0.09625935517200476, -0.21339971424963608, 0.2906809430948887],
    );
}

#[test]
fn nesterov_sgd_matches_torch() {
    let mut opt = Sgd::new(1e-2).with_momentum(0.9).with_nesterov(true).with_weight_decay(0.1);
    let store = run(&mut opt);
    #[rustfmt::skip]
    assert_matches(
        &store,
        [0.48522082464430377, -1.0244775631047462, 1.9614614854645782,
         -0.028902973030050388, 0.21761762120304776, -0.7781328242323803],
        [0.09276446209586856, -0.2187859911537985, 0.29019303245513506],
    );
}
