//! Parameters live outside the tape: a named list of tensors with their accumulated gradients.
//!
//! The tape shares a parameter's value through an `Arc` (no copy per step). Once the tape is
//! cleared the store holds the only reference again, and optimizers update the value in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::ArrayD;

use crate::Float;

/// The index of a parameter in its [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ParamId(pub usize);

/// One trainable tensor.
pub struct Param<F> {
    /// Unique name, such as `h.0.attn.c_attn.weight`.
    pub name: String,
    value: Arc<ArrayD<F>>,
    /// The gradient accumulated since the last [`ParamStore::zero_grad`], same shape as the value.
    pub grad: ArrayD<F>,
    /// Whether decoupled weight decay applies (by default: tensors of rank 2 or more).
    pub decay: bool,
}

impl<F: Float> Param<F> {
    /// The current value.
    pub fn value(&self) -> &ArrayD<F> {
        &self.value
    }

    /// The value for in-place update. Copies it first only if a tape still shares it
    /// (call [`crate::Tape::clear`] before the optimizer step to avoid that).
    pub fn value_mut(&mut self) -> &mut ArrayD<F> {
        Arc::make_mut(&mut self.value)
    }

    /// The value and the gradient at once, for optimizers.
    pub fn value_and_grad_mut(&mut self) -> (&mut ArrayD<F>, &ArrayD<F>) {
        (Arc::make_mut(&mut self.value), &self.grad)
    }
}

/// An ordered, named collection of parameters.
pub struct ParamStore<F> {
    params: Vec<Param<F>>,
    /// This store's identity, unique in the process (see [`ParamStore::stamp`]).
    id: u64,
    /// Bumped by every call that can change a value.
    version: u64,
}

impl<F: Float> Default for ParamStore<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// Source of [`ParamStore`] identities.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

impl<F: Float> ParamStore<F> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore { params: Vec::new(), id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed), version: 0 }
    }

    /// Identifies the current values: two calls return the same stamp only if no value of this
    /// store can have changed in between. Caches derived from the weights (such as the inference
    /// path's packed copies) compare stamps instead of the weights themselves. Every method that
    /// hands out mutable access (`add`, `get_mut`, `iter_mut`) changes the stamp, whether or not
    /// the caller then writes.
    pub fn stamp(&self) -> (u64, u64) {
        (self.id, self.version)
    }

    /// Adds a parameter; weight decay defaults to on for rank >= 2 (matrices, embeddings).
    ///
    /// # Panics
    /// If `name` is already taken.
    pub fn add(&mut self, name: impl Into<String>, value: ArrayD<F>) -> ParamId {
        let name = name.into();
        assert!(self.id(&name).is_none(), "ParamStore::add: duplicate parameter name {name:?}");
        let decay = value.ndim() >= 2;
        let grad = ArrayD::zeros(value.raw_dim());
        self.version += 1;
        self.params.push(Param { name, value: Arc::new(value), grad, decay });
        ParamId(self.params.len() - 1)
    }

    /// Looks a parameter up by name.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// The parameter `id`.
    pub fn get(&self, id: ParamId) -> &Param<F> {
        &self.params[id.0]
    }

    /// The parameter `id`, mutably.
    pub fn get_mut(&mut self, id: ParamId) -> &mut Param<F> {
        self.version += 1;
        &mut self.params[id.0]
    }

    /// The value of parameter `id`.
    pub fn value(&self, id: ParamId) -> &ArrayD<F> {
        &self.params[id.0].value
    }

    /// The accumulated gradient of parameter `id`.
    pub fn grad(&self, id: ParamId) -> &ArrayD<F> {
        &self.params[id.0].grad
    }

    pub(crate) fn shared(&self, id: ParamId) -> Arc<ArrayD<F>> {
        Arc::clone(&self.params[id.0].value)
    }

    pub(crate) fn add_grad(&mut self, id: ParamId, g: &ArrayD<F>) {
        self.params[id.0].grad += g;
    }

    /// Sets every accumulated gradient to zero (keeps the buffers).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad.fill(F::zero());
        }
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar elements over all parameters.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.value.len()).sum()
    }

    /// The parameters in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param<F>)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    /// The parameters in insertion order, mutably (optimizers).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Param<F>)> {
        self.version += 1;
        self.params.iter_mut().enumerate().map(|(i, p)| (ParamId(i), p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_changes_with_every_mutable_access_and_differs_between_stores() {
        let mut a = ParamStore::<f32>::new();
        let id = a.add("w", ArrayD::zeros(vec![2]));
        let s0 = a.stamp();
        assert_eq!(a.stamp(), s0, "reading does not change the stamp");
        let _ = a.value(id);
        assert_eq!(a.stamp(), s0);
        a.get_mut(id).value_mut()[0] = 1.0;
        let s1 = a.stamp();
        assert_ne!(s1, s0);
        for (_, p) in a.iter_mut() {
            p.value_mut()[1] = 2.0;
        }
        assert_ne!(a.stamp(), s1);
        let mut b = ParamStore::<f32>::new();
        b.add("w", ArrayD::zeros(vec![2]));
        assert_ne!(a.stamp().0, b.stamp().0, "two stores never share an identity");
    }
}
