//! Fixtures shared by the optimizers' unit tests.

use ndarray::{arr1, arr2};

use crate::ParamStore;

/// A store with a 1×1 matrix `w` (decayed) and a length-1 vector `b` (not decayed), both 1.0.
pub(crate) fn two_param_store() -> ParamStore<f64> {
    let mut store = ParamStore::new();
    store.add("w", arr2(&[[1.0]]).into_dyn());
    store.add("b", arr1(&[1.0]).into_dyn());
    store
}

/// Sets every gradient of `store` to `g`.
pub(crate) fn set_grads(store: &mut ParamStore<f64>, g: f64) {
    for (_, p) in store.iter_mut() {
        p.grad.fill(g);
    }
}

/// The single value of the one-element parameter `name`.
pub(crate) fn scalar(store: &ParamStore<f64>, name: &str) -> f64 {
    store.value(store.id(name).unwrap()).iter().next().copied().unwrap()
}
