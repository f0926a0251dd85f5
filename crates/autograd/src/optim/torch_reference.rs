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
        [4.93779895193109830e-01, -1.01509252270104189e+00, 1.98049709419075737e+00,
         -1.56845798514236093e-02, 2.33222027107849811e-01, -7.65443752937795430e-01],
        [9.62593551720047624e-02, -2.13399714249636080e-01, 2.90680943094888677e-01],
    );
}

#[test]
fn adam_matches_torch() {
    let mut opt = Adam::new(1e-2).with_betas(0.9, 0.95).with_weight_decay(0.1);
    let store = run(&mut opt);
    #[rustfmt::skip]
    assert_matches(
        &store,
        [4.84410901887294687e-01, -1.01673483292243971e+00, 1.98358619589309093e+00,
         -1.56886797540970145e-02, 2.33605622388472794e-01, -7.66665811720592227e-01],
        [9.62593551720047624e-02, -2.13399714249636080e-01, 2.90680943094888677e-01],
    );
}

#[test]
fn nesterov_sgd_matches_torch() {
    let mut opt = Sgd::new(1e-2).with_momentum(0.9).with_nesterov(true).with_weight_decay(0.1);
    let store = run(&mut opt);
    #[rustfmt::skip]
    assert_matches(
        &store,
        [4.85220824644303772e-01, -1.02447756310474625e+00, 1.96146148546457821e+00,
         -2.89029730300503877e-02, 2.17617621203047756e-01, -7.78132824232380282e-01],
        [9.27644620958685551e-02, -2.18785991153798487e-01, 2.90193032455135058e-01],
    );
}
