//! The tape (Wengert list): every operation appends one node; backward walks the nodes in reverse.
//!
//! Creation order is already a topological order, so backward needs no graph search: node `i` can
//! only read nodes `< i`. Gradients of intermediate nodes are dropped as soon as they have been
//! propagated, so the peak memory of backward is the forward activations plus one frontier of
//! gradients.

use std::sync::Arc;

use ndarray::ArrayD;

use crate::Float;
use crate::ops::Op;
use crate::params::{ParamId, ParamStore};

/// A handle to one value recorded on a [`Tape`]. Cheap to copy; only meaningful for the tape
/// (and the step, between two [`Tape::clear`] calls) that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) u32);

impl Var {
    /// The node's position on its tape.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A node's value: owned by the tape, or shared with a [`ParamStore`] (no copy of the weights).
pub(crate) enum Value<F> {
    Owned(ArrayD<F>),
    Shared(Arc<ArrayD<F>>),
}

impl<F> Value<F> {
    #[inline]
    pub(crate) fn get(&self) -> &ArrayD<F> {
        match self {
            Value::Owned(a) => a,
            Value::Shared(a) => a,
        }
    }
}

pub(crate) struct Node<F> {
    pub(crate) value: Value<F>,
    pub(crate) op: Op<F>,
    pub(crate) requires_grad: bool,
}

/// Records operations on tensors so that [`Tape::backward`] can differentiate them.
///
/// Operations are methods on the tape (`tape.matmul(a, b)`, `tape.tanh(x)`, ...) defined in the
/// [`crate::ops`] modules. With gradients disabled ([`Tape::set_grad_enabled`]) the tape still
/// computes values but records no backward information and keeps no caches.
pub struct Tape<F: Float> {
    pub(crate) nodes: Vec<Node<F>>,
    grad_enabled: bool,
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> Tape<F> {
    /// An empty tape that records gradients.
    pub fn new() -> Self {
        Tape { nodes: Vec::new(), grad_enabled: true }
    }

    /// An empty tape in no-grad mode (inference, sampling).
    pub fn no_grad() -> Self {
        Tape { nodes: Vec::new(), grad_enabled: false }
    }

    /// Turns recording of backward information on or off for the operations that follow.
    pub fn set_grad_enabled(&mut self, enabled: bool) {
        self.grad_enabled = enabled;
    }

    /// Whether operations currently record backward information.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Forgets every node but keeps the node buffer's capacity, so the next step does not reallocate it.
    /// Also releases the tape's shares of parameter values, so optimizers can update them in place.
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    /// Number of nodes recorded since the last [`Tape::clear`].
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A leaf that backward never differentiates (data, masks, targets).
    pub fn constant(&mut self, value: ArrayD<F>) -> Var {
        self.push_leaf(Value::Owned(value), false, None)
    }

    /// A leaf whose gradient backward computes (an input we differentiate with respect to).
    pub fn input(&mut self, value: ArrayD<F>) -> Var {
        let rg = self.grad_enabled;
        self.push_leaf(Value::Owned(value), rg, None)
    }

    /// A leaf bound to a parameter of `store`. The value is shared, not copied; backward reports
    /// its gradient under `id` (see [`Gradients::accumulate_into`]).
    pub fn param(&mut self, store: &ParamStore<F>, id: ParamId) -> Var {
        let rg = self.grad_enabled;
        self.push_leaf(Value::Shared(store.shared(id)), rg, Some(id))
    }

    fn push_leaf(&mut self, value: Value<F>, requires_grad: bool, param: Option<ParamId>) -> Var {
        let var = self.next_var();
        self.nodes.push(Node { value, op: Op::Leaf { param }, requires_grad });
        var
    }

    fn next_var(&self) -> Var {
        Var(u32::try_from(self.nodes.len()).expect("tape holds more than u32::MAX nodes"))
    }

    /// The value of `v`.
    #[inline]
    pub fn value(&self, v: Var) -> &ArrayD<F> {
        self.nodes[v.index()].value.get()
    }

    /// The shape of `v`'s value.
    #[inline]
    pub fn shape(&self, v: Var) -> &[usize] {
        self.value(v).shape()
    }

    /// Whether backward will compute a gradient for `v`.
    #[inline]
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.index()].requires_grad
    }

    /// Appends the result of an operation. `op` builds the backward record (and whatever the
    /// backward needs to keep); it is called only if some input requires a gradient, so no-grad
    /// inference pays for no caches.
    pub(crate) fn push(&mut self, value: ArrayD<F>, inputs: &[Var], op: impl FnOnce() -> Op<F>) -> Var {
        let requires_grad = self.grad_enabled && inputs.iter().any(|&v| self.requires_grad(v));
        let op = if requires_grad { op() } else { Op::Leaf { param: None } };
        let var = self.next_var();
        self.nodes.push(Node { value: Value::Owned(value), op, requires_grad });
        var
    }

    /// Differentiates the scalar `loss` (a tensor with one element) with respect to every leaf
    /// that requires a gradient.
    ///
    /// # Panics
    /// If `loss` does not hold exactly one element.
    pub fn backward(&self, loss: Var) -> Gradients<F> {
        let n = self.value(loss).len();
        assert!(n == 1, "backward: the loss must have one element, got shape {:?}", self.shape(loss));
        let seed = ArrayD::from_elem(self.shape(loss), F::one());
        self.backward_with(loss, seed)
    }

    /// Vector-Jacobian product: backpropagates `seed` (the gradient of some scalar with respect
    /// to `output`, same shape as `output`) to every leaf that requires a gradient.
    ///
    /// # Panics
    /// If `seed`'s shape differs from `output`'s.
    pub fn backward_with(&self, output: Var, seed: ArrayD<F>) -> Gradients<F> {
        assert!(
            seed.shape() == self.shape(output),
            "backward_with: seed shape {:?} differs from output shape {:?}",
            seed.shape(),
            self.shape(output)
        );
        let n = output.index() + 1;
        let mut grads: Vec<Option<ArrayD<F>>> = Vec::with_capacity(n);
        grads.resize_with(n, || None);
        if self.requires_grad(output) {
            grads[output.index()] = Some(seed);
        }
        for i in (0..n).rev() {
            let node = &self.nodes[i];
            if let Op::Leaf { .. } = node.op {
                continue;
            }
            let Some(grad_out) = grads[i].take() else { continue };
            let mut ctx = Backward { nodes: &self.nodes[..i], grads: &mut grads[..i] };
            node.op.backward(node.value.get(), grad_out, &mut ctx);
        }
        let params = self.nodes[..n]
            .iter()
            .enumerate()
            .filter_map(|(i, node)| match node.op {
                Op::Leaf { param: Some(id) } => Some((id, Var(i as u32))),
                _ => None,
            })
            .collect();
        Gradients { grads, params }
    }
}

/// What an op's backward sees: the values of earlier nodes and their gradient slots.
pub(crate) struct Backward<'a, F> {
    nodes: &'a [Node<F>],
    grads: &'a mut [Option<ArrayD<F>>],
}

impl<F: Float> Backward<'_, F> {
    /// The forward value of an input.
    #[inline]
    pub(crate) fn value(&self, v: Var) -> &ArrayD<F> {
        self.nodes[v.index()].value.get()
    }

    /// Whether `v` wants a gradient (skip computing it otherwise).
    #[inline]
    pub(crate) fn needs(&self, v: Var) -> bool {
        self.nodes[v.index()].requires_grad
    }

    /// Adds `g` to `v`'s gradient, moving it in when the slot is empty (no copy).
    pub(crate) fn add(&mut self, v: Var, g: ArrayD<F>) {
        if !self.needs(v) {
            return;
        }
        let shape = self.nodes[v.index()].value.get().shape();
        assert!(
            g.shape() == shape,
            "backward: gradient shape {:?} for a value of shape {:?}",
            g.shape(),
            shape
        );
        match &mut self.grads[v.index()] {
            // Elementwise, so the bits do not depend on the split; large sums use the pool.
            Some(acc) => match (acc.as_slice_mut(), g.as_slice()) {
                (Some(a), Some(b)) => crate::ops::elementwise::kernels::slice_update(a, b, |x, y| x + y),
                _ => *acc += &g,
            },
            slot @ None => *slot = Some(g),
        }
    }

    /// `v`'s gradient slot, zero-filled on first use, for kernels that accumulate in place
    /// (`+=`, as llm.c's backward kernels do). Only call it when [`Backward::needs`] is true.
    pub(crate) fn slot(&mut self, v: Var) -> &mut ArrayD<F> {
        debug_assert!(self.needs(v));
        let shape = self.nodes[v.index()].value.get().shape();
        self.grads[v.index()].get_or_insert_with(|| crate::fill::zeros(shape))
    }
}

/// The gradients computed by one backward pass, for the leaves that required them.
pub struct Gradients<F> {
    grads: Vec<Option<ArrayD<F>>>,
    params: Vec<(ParamId, Var)>,
}

impl<F: Float> Gradients<F> {
    /// The gradient with respect to the leaf `v`, or `None` when no path reaches it from the output.
    pub fn wrt(&self, v: Var) -> Option<&ArrayD<F>> {
        self.grads.get(v.index()).and_then(|g| g.as_ref())
    }

    /// Takes the gradient of `v` out (no copy).
    pub fn take(&mut self, v: Var) -> Option<ArrayD<F>> {
        self.grads.get_mut(v.index()).and_then(|g| g.take())
    }

    /// Adds each parameter leaf's gradient to the parameter's accumulated gradient in `store`
    /// (so micro-batches sum up, as PyTorch's `.grad` does). A parameter bound several times gets
    /// the sum of all its uses.
    pub fn accumulate_into(&self, store: &mut ParamStore<F>) {
        for &(id, var) in &self.params {
            if let Some(g) = self.wrt(var) {
                store.add_grad(id, g);
            }
        }
    }
}
