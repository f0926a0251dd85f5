//! Inverted dropout with a counter-based mask.
//!
//! Whether element `i` is kept is a pure function of `(seed, i)`: the `i`-th output of a splitmix64
//! stream keyed by the seed. So the mask does not depend on the thread count or on the order in
//! which chunks run, and backward recomputes it instead of storing it.

use ndarray::ArrayD;
use rayon::prelude::*;

use super::kernels::{into_standard, parallel};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Elements per rayon task (the mask does not depend on it).
const CHUNK: usize = 1 << 14;

pub(crate) struct Op {
    x: Var,
    p: f64,
    seed: u64,
}

impl Op {
    pub(crate) fn backward<F: Float>(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        // d(m x / (1 - p)) = m dx / (1 - p): the same mask and scale applied to the gradient.
        if self.p == 0.0 {
            return ctx.add(self.x, grad_out);
        }
        let mut g = into_standard(grad_out);
        apply_mask(g.as_slice_mut().expect("standard layout"), self.p, self.seed);
        ctx.add(self.x, g);
    }
}

/// The splitmix64 finalizer: a bijective 64-bit mix with good avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether element `index` survives dropout with probability `p` under `key = mix(seed)`.
/// `u = mix(key + (index + 1) * gamma)` is the splitmix64 stream's `index`-th draw; keep iff
/// its top 53 bits, read as a uniform in [0, 1), are `>= p`.
#[inline]
fn keep(key: u64, index: u64, p: f64) -> bool {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let u = mix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)));
    (u >> 11) as f64 * (1.0 / (1u64 << 53) as f64) >= p
}

/// `xs[i] = keep(i) ? xs[i] / (1 - p) : 0` over a row-major buffer.
fn apply_mask<F: Float>(xs: &mut [F], p: f64, seed: u64) {
    let key = mix(seed);
    let scale = F::of(1.0 / (1.0 - p));
    let run = |start: usize, chunk: &mut [F]| {
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if keep(key, (start + j) as u64, p) { *v * scale } else { F::zero() };
        }
    };
    if parallel(xs.len()) {
        xs.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| run(c * CHUNK, chunk));
    } else {
        run(0, xs);
    }
}

impl<F: Float> Tape<F> {
    /// Inverted dropout: each element is kept with probability `1 - p` and scaled by `1 / (1 - p)`
    /// (so the expectation is unchanged), or zeroed. It applies whenever called; the model decides
    /// when (training vs evaluation). `p == 0` returns a copy of `x`.
    ///
    /// The mask is a function of `(seed, element index)` (row-major index into `x`), so a given
    /// seed gives the same mask whatever the thread count; the gradient uses the same mask.
    ///
    /// # Panics
    /// Unless `0 <= p < 1`.
    pub fn dropout(&mut self, x: Var, p: f64, seed: u64) -> Var {
        assert!((0.0..1.0).contains(&p), "dropout: p = {p} must lie in [0, 1)");
        let mut value = into_standard(self.value(x).clone());
        if p > 0.0 {
            apply_mask(value.as_slice_mut().expect("standard layout"), p, seed);
        }
        self.push(value, &[x], || crate::ops::Op::Elementwise(super::Op::Dropout(Op { x, p, seed })))
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(super) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    /// The seed and the rate (ints[1] tenths) are fixed per sample, so the mask is a constant.
    fn dropout<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.dropout(x[0], s.ints[1] as f64 / 10.0, s.ints[0] as u64)
    }
    vec![gradcheck_case!(
        "dropout (fixed seed)",
        || (shape(4, 5), any::<u32>(), 0usize..9)
            .prop_flat_map(|(s, seed, p)| (array(s, -2.0, 2.0), Just(seed), Just(p), any::<u64>()))
            .prop_map(|(a, seed, p, w)| Sample {
                ints: vec![seed as usize, p],
                seed_weights: w,
                ..Sample::new(vec![a])
            })
            .boxed(),
        dropout
    )]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use crate::Tape;

    fn run(n: usize, p: f64, seed: u64) -> ArrayD<f32> {
        let mut t = Tape::<f32>::new();
        let x = t.input(ArrayD::from_elem(IxDyn(&[n]), 1.0));
        let y = t.dropout(x, p, seed);
        t.value(y).clone()
    }

    #[test]
    fn keep_rate_and_scale() {
        for p in [0.1, 0.5, 0.9] {
            let y = run(10_000, p, 7);
            let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / 10_000.0;
            // Binomial standard deviation is at most 0.005; allow four of them.
            assert!((kept - (1.0 - p)).abs() < 0.02, "p = {p}: kept {kept}");
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(y.iter().all(|&v| v == 0.0 || v == scale));
        }
    }

    #[test]
    fn mask_is_deterministic_and_depends_on_the_seed() {
        assert_eq!(run(1000, 0.5, 42), run(1000, 0.5, 42));
        assert_ne!(run(1000, 0.5, 42), run(1000, 0.5, 43));
        // Consecutive seeds (a per-layer seed + layer index) must not give shifted copies of a mask.
        let (a, b) = (run(1000, 0.5, 42), run(1000, 0.5, 43));
        let same = a.iter().zip(b.iter()).filter(|(x, y)| x == y).count();
        assert!((400..600).contains(&same), "masks of seeds 42 and 43 agree on {same} of 1000");
        assert_eq!(run(100, 0.0, 1), ArrayD::from_elem(IxDyn(&[100]), 1.0));
    }

    #[test]
    fn mask_does_not_depend_on_the_thread_count() {
        // 200k elements take the parallel path; the prefix must match a small sequential run.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let a = one.install(|| run(200_000, 0.3, 9));
        let b = two.install(|| run(200_000, 0.3, 9));
        assert_eq!(a, b);
        assert_eq!(a.as_slice().unwrap()[..1000], run(1000, 0.3, 9).as_slice().unwrap()[..]);
    }

    #[test]
    fn gradient_uses_the_forward_mask() {
        let mut t = Tape::<f64>::new();
        let x = t.input(ArrayD::from_shape_fn(IxDyn(&[50, 40]), |i| 1.0 + i[0] as f64));
        let y = t.dropout(x, 0.25, 3);
        let g = t.backward_with(y, ArrayD::from_elem(IxDyn(&[50, 40]), 1.0));
        let gx = g.wrt(x).unwrap();
        for (gv, (yv, xv)) in gx.iter().zip(t.value(y).iter().zip(t.value(x).iter())) {
            // The gradient is the mask times the scale, y / x.
            assert!((*gv - *yv / *xv).abs() < 1e-12, "{gv} vs {}", yv / xv);
        }
    }

    #[test]
    #[should_panic(expected = "dropout: p = 1 must lie in [0, 1)")]
    fn p_of_one_panics() {
        run(4, 1.0, 0);
    }
}
