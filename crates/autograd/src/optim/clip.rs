//! Gradient clipping by global norm (PyTorch's `clip_grad_norm_`).

use ndarray::ArrayD;
use rayon::prelude::*;

use super::CHUNK;
use crate::{Float, ParamStore};

/// Clips the gradients of `store` to a global L2 norm of at most `max_norm`, and returns the norm
/// before clipping.
///
/// The norm is `‖g‖ = √(Σ over all parameters and elements of g²)`, accumulated in f64 over fixed
/// chunks in a fixed order, so it is bit-identical whatever the thread count. When `‖g‖ > max_norm`
/// every gradient is scaled by `max_norm / (‖g‖ + 1e-6)`, as `torch.nn.utils.clip_grad_norm_` does.
///
/// A non-finite norm (a NaN or infinite gradient) is returned as is and nothing is scaled: the
/// caller decides whether to skip the step. `max_norm = f64::INFINITY` only measures the norm.
///
/// # Panics
/// If `max_norm` is not positive (or NaN).
pub fn clip_grad_norm<F: Float>(store: &mut ParamStore<F>, max_norm: f64) -> f64 {
    assert!(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got {max_norm}");
    let norm = store.iter().map(|(_, p)| sum_of_squares(&p.grad)).sum::<f64>().sqrt();
    if norm.is_finite() && norm > max_norm {
        let scale = F::of(max_norm / (norm + 1e-6));
        for (_, p) in store.iter_mut() {
            scale_in_place(&mut p.grad, scale);
        }
    }
    norm
}

/// `Σ g²` in f64: chunk sums (in parallel for large tensors) added in chunk order.
fn sum_of_squares<F: Float>(g: &ArrayD<F>) -> f64 {
    match g.as_slice_memory_order() {
        Some(s) if s.len() > CHUNK => {
            s.par_chunks(CHUNK).map(chunk_sum_of_squares).collect::<Vec<f64>>().iter().sum()
        }
        Some(s) => chunk_sum_of_squares(s),
        // Only for gradients with holes in memory (never produced by the store itself).
        None => g.iter().map(|&x| x.to_f64() * x.to_f64()).sum(),
    }
}

/// `Σ x²` over one chunk in f64, with eight interleaved partial sums: a fixed association order
/// (so still deterministic) that lets the loop vectorize instead of waiting on one accumulator.
fn chunk_sum_of_squares<F: Float>(c: &[F]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let blocks = c.chunks_exact(8);
    let tail = blocks.remainder();
    for block in blocks {
        for (acc, &x) in lanes.iter_mut().zip(block) {
            *acc += x.to_f64() * x.to_f64();
        }
    }
    let tail_sum: f64 = tail.iter().map(|&x| x.to_f64() * x.to_f64()).sum();
    lanes.iter().sum::<f64>() + tail_sum
}

/// `g ← scale · g`.
fn scale_in_place<F: Float>(g: &mut ArrayD<F>, scale: F) {
    match g.as_slice_memory_order_mut() {
        Some(s) if s.len() > CHUNK => {
            s.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= scale))
        }
        Some(s) => s.iter_mut().for_each(|x| *x *= scale),
        None => g.mapv_inplace(|x| x * scale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, arr1, arr2};

    /// Gradients (3, 4) and (12): global norm √(9 + 16 + 144) = 13.
    fn store_with_norm_13() -> ParamStore<f64> {
        let mut store = ParamStore::new();
        let a = store.add("a", arr2(&[[0.0, 0.0]]).into_dyn());
        let b = store.add("b", arr1(&[0.0]).into_dyn());
        store.get_mut(a).grad = arr2(&[[3.0, 4.0]]).into_dyn();
        store.get_mut(b).grad = arr1(&[12.0]).into_dyn();
        store
    }

    fn all_grads(store: &ParamStore<f64>) -> Vec<f64> {
        store.iter().flat_map(|(_, p)| p.grad.iter().copied().collect::<Vec<_>>()).collect()
    }

    #[test]
    fn clips_to_max_norm() {
        let mut store = store_with_norm_13();
        let norm = clip_grad_norm(&mut store, 6.5);
        assert_eq!(norm, 13.0);
        // scale = 6.5 / (13 + 1e-6) ≈ 0.5: (3, 4, 12) → (1.5, 2, 6), new norm just under 6.5.
        let s = 6.5 / (13.0 + 1e-6);
        assert_eq!(all_grads(&store), vec![3.0 * s, 4.0 * s, 12.0 * s]);
        for (g, want) in all_grads(&store).iter().zip([1.5, 2.0, 6.0]) {
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
        let after = clip_grad_norm(&mut store, f64::INFINITY);
        assert!(after < 6.5 && after > 6.5 - 1e-6, "{after}");
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let mut store = store_with_norm_13();
        assert_eq!(clip_grad_norm(&mut store, 13.0), 13.0);
        assert_eq!(clip_grad_norm(&mut store, 20.0), 13.0);
        assert_eq!(all_grads(&store), vec![3.0, 4.0, 12.0]);
    }

    #[test]
    fn non_finite_norm_is_returned_unscaled() {
        let mut store = store_with_norm_13();
        store.get_mut(crate::ParamId(1)).grad[IxDyn(&[0])] = f64::NAN;
        assert!(clip_grad_norm(&mut store, 1.0).is_nan());
        assert_eq!(all_grads(&store)[..2], [3.0, 4.0]);
        store.get_mut(crate::ParamId(1)).grad[IxDyn(&[0])] = f64::INFINITY;
        assert_eq!(clip_grad_norm(&mut store, 1.0), f64::INFINITY);
        assert_eq!(all_grads(&store), vec![3.0, 4.0, f64::INFINITY]);
    }

    #[test]
    fn norm_is_independent_of_the_thread_count() {
        let n = 3 * CHUNK + 5;
        let mut store = ParamStore::<f32>::new();
        let id = store.add("w", ArrayD::zeros(IxDyn(&[n])));
        store.get_mut(id).grad = ArrayD::from_shape_fn(IxDyn(&[n]), |i| ((i[0] as f32) * 0.013).sin());
        let norm_with = |threads: usize, store: &mut ParamStore<f32>| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| clip_grad_norm(store, f64::INFINITY))
        };
        let one = norm_with(1, &mut store);
        let three = norm_with(3, &mut store);
        assert_eq!(one.to_bits(), three.to_bits());
        let exact: f64 = store.grad(id).iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        assert!((one - exact).abs() < 1e-9 * exact, "{one} vs {exact}");
    }

    #[test]
    fn clips_f32_gradients() {
        let mut store = ParamStore::<f32>::new();
        let id = store.add("w", ArrayD::zeros(IxDyn(&[2])));
        store.get_mut(id).grad = arr1(&[30.0f32, 40.0]).into_dyn();
        assert_eq!(clip_grad_norm(&mut store, 1.0), 50.0);
        let g = store.grad(id);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6, "{g}");
    }
}
