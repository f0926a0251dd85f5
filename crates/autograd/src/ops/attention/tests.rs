//! The fused attention ops against plain loops, against each other, and against the same graph
//! built from separate tape ops.

use ndarray::{Array4, ArrayD, Axis, Ix4, IxDyn, s};

use super::Op;
use crate::test_util::filled;
use crate::{Tape, Var};

fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Attention with three nested loops, straight from the definition.
fn naive(q: &ArrayD<f64>, k: &ArrayD<f64>, v: &ArrayD<f64>, causal: bool) -> ArrayD<f64> {
    let [q, k, v] = [q, k, v].map(|x| x.view().into_dimensionality::<Ix4>().unwrap());
    let (nb, nh, t, d) = q.dim();
    let mut out = Array4::zeros((nb, nh, t, d));
    for b in 0..nb {
        for h in 0..nh {
            for i in 0..t {
                let live = if causal { i + 1 } else { t };
                let scores: Vec<f64> = (0..live)
                    .map(|j| {
                        (0..d).map(|c| q[[b, h, i, c]] * k[[b, h, j, c]]).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    let p = (s - max).exp() / z;
                    for c in 0..d {
                        out[[b, h, i, c]] += p * v[[b, h, j, c]];
                    }
                }
            }
        }
    }
    out.into_dyn()
}

#[test]
fn forward_matches_the_definition() {
    let shape = [2, 3, 7, 5];
    let (q, k, v) = (filled(&shape, 1), filled(&shape, 2), filled(&shape, 3));
    for causal in [false, true] {
        let mut t = Tape::<f64>::no_grad();
        let (qv, kv, vv) = (t.constant(q.clone()), t.constant(k.clone()), t.constant(v.clone()));
        let y = t.attention(qv, kv, vv, causal);
        let err = max_diff(t.value(y), &naive(&q, &k, &v, causal));
        assert!(err < 1e-12, "causal={causal}: max error {err}");
    }
}

#[test]
fn future_probabilities_are_exactly_zero_and_rows_sum_to_one() {
    let shape = [1, 2, 6, 3];
    let mut t = Tape::<f64>::new();
    let [q, k, v] = [1, 2, 3].map(|s| t.input(filled(&shape, s)));
    let y = t.attention(q, k, v, true);
    let crate::ops::Op::Attention(Op::Attention { probs, .. }) = &t.nodes[y.index()].op else {
        panic!("attention records its probabilities");
    };
    for row in probs.view().into_shape_with_order((12, 6)).unwrap().outer_iter().enumerate() {
        let (i, p) = (row.0 % 6, row.1);
        assert!(p.slice(s![i + 1..]).iter().all(|&x| x == 0.0), "row {i}: {p}");
        assert!((p.sum() - 1.0).abs() < 1e-15);
    }
}

#[test]
fn causal_output_ignores_the_future() {
    let shape = [1, 1, 6, 4];
    let (q, k, v) = (filled(&shape, 4), filled(&shape, 5), filled(&shape, 6));
    let run = |k: &ArrayD<f64>, v: &ArrayD<f64>| {
        let mut t = Tape::<f64>::no_grad();
        let [qv, kv, vv] = [&q, k, v].map(|x| t.constant(x.clone()));
        let y = t.attention(qv, kv, vv, true);
        t.value(y).clone()
    };
    let (mut k2, mut v2) = (k.clone(), v.clone());
    k2.slice_mut(s![.., .., 4.., ..]).fill(9.0);
    v2.slice_mut(s![.., .., 4.., ..]).fill(-9.0);
    let (a, b) = (run(&k, &v), run(&k2, &v2));
    assert_eq!(a.slice(s![.., .., ..4, ..]), b.slice(s![.., .., ..4, ..]));
    assert_ne!(a.slice(s![.., .., 4.., ..]), b.slice(s![.., .., 4.., ..]));
}

/// Splits a packed `(B, T, 3C)` qkv into `(B, H, T, hs)` q, k, v (the copies the fused op avoids).
fn split_heads(qkv: &ArrayD<f64>, n_head: usize) -> [ArrayD<f64>; 3] {
    let (nb, t, c3) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
    let c = c3 / 3;
    [0, 1, 2].map(|i| {
        let part = qkv.slice(s![.., .., i * c..(i + 1) * c]).to_owned();
        let part = part.into_shape_with_order((nb, t, n_head, c / n_head)).unwrap();
        part.permuted_axes([0, 2, 1, 3]).as_standard_layout().into_owned().into_dyn()
    })
}

/// Merges `(B, H, T, hs)` heads back into `(B, T, H·hs)`.
fn merge_heads(x: &ArrayD<f64>) -> ArrayD<f64> {
    let (nb, nh, t, hs) = x.view().into_dimensionality::<Ix4>().unwrap().dim();
    let x = x.view().permuted_axes(IxDyn(&[0, 2, 1, 3])).as_standard_layout().into_owned();
    x.into_shape_with_order(IxDyn(&[nb, t, nh * hs])).unwrap()
}

#[test]
fn causal_self_attention_equals_attention_on_split_heads() {
    // Small heads (one-column tiles), and the GRPO update's heads (T = 39, 16-column tiles) next
    // to a ragged width, in the packed layout whose rows are `3C` apart.
    for (nb, t, n_head, hs) in [(2, 5, 3, 4), (2, 39, 2, 32), (1, 41, 2, 37)] {
        let qkv0 = filled(&[nb, t, 3 * n_head * hs], 7);
        let g0 = filled(&[nb, t, n_head * hs], 8);

        let mut tape = Tape::<f64>::new();
        let qkv = tape.input(qkv0.clone());
        let y = tape.causal_self_attention(qkv, n_head);
        let fused = tape.value(y).clone();
        let dqkv = tape.backward_with(y, g0.clone()).wrt(qkv).unwrap().clone();

        let mut tape = Tape::<f64>::new();
        let [q, k, v] = split_heads(&qkv0, n_head).map(|x| tape.input(x));
        let y = tape.attention(q, k, v, true);
        let g4 = g0.into_shape_with_order((nb, t, n_head, hs)).unwrap().permuted_axes([0, 2, 1, 3]);
        let grads = tape.backward_with(y, g4.as_standard_layout().into_owned().into_dyn());
        assert!(max_diff(&fused, &merge_heads(tape.value(y))) < 1e-14, "T {t}, hs {hs}");
        let parts: Vec<ArrayD<f64>> = [q, k, v].iter().map(|&x| merge_heads(grads.wrt(x).unwrap())).collect();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let want = ndarray::concatenate(Axis(2), &views).unwrap();
        assert!(max_diff(&dqkv, &want) < 1e-14, "T {t}, hs {hs}");
    }
}

#[test]
fn same_tensor_as_q_k_and_v_accumulates_all_three_gradients() {
    let shape = [1, 2, 4, 3];
    let x0 = filled(&shape, 9);
    let g0 = filled(&shape, 10);
    let mut t = Tape::<f64>::new();
    let x = t.input(x0.clone());
    let y = t.attention(x, x, x, true);
    let shared = t.backward_with(y, g0.clone()).wrt(x).unwrap().clone();
    let mut t = Tape::<f64>::new();
    let [q, k, v] = [0; 3].map(|_| t.input(x0.clone()));
    let y = t.attention(q, k, v, true);
    let g = t.backward_with(y, g0);
    let sum = g.wrt(q).unwrap() + g.wrt(k).unwrap() + g.wrt(v).unwrap();
    assert!(max_diff(&shared, &sum) < 1e-14);
}

#[test]
#[should_panic(expected = "attention: q [1, 2, 3, 4], k [1, 2, 3, 4] and v [1, 2, 3, 5]")]
fn attention_rejects_mismatched_shapes() {
    let mut t = Tape::<f64>::new();
    let q = t.input(ArrayD::zeros(IxDyn(&[1, 2, 3, 4])));
    let v = t.input(ArrayD::zeros(IxDyn(&[1, 2, 3, 5])));
    t.attention(q, q, v, true);
}

#[test]
#[should_panic(expected = "causal_self_attention: qkv [2, 3, 12]")]
fn causal_self_attention_rejects_indivisible_heads() {
    let mut t = Tape::<f64>::new();
    let qkv = t.input(ArrayD::zeros(IxDyn(&[2, 3, 12])));
    t.causal_self_attention(qkv, 3);
}

/// Both fused ops forward and backward in f32 inside a rayon pool of `threads`.
fn run_in_pool(threads: usize) -> Vec<ArrayD<f32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let cast = |x: ArrayD<f64>| x.mapv(|v| v as f32);
        let mut t = Tape::<f32>::new();
        let shape = [3, 2, 37, 16];
        let [q, k, v] = [11, 12, 13].map(|s| t.input(cast(filled(&shape, s))));
        let y = t.attention(q, k, v, true);
        let qkv = t.input(cast(filled(&[3, 37, 96], 14)));
        let z = t.causal_self_attention(qkv, 4);
        let gy = t.backward_with(y, cast(filled(&shape, 15)));
        let gz = t.backward_with(z, cast(filled(&[3, 37, 32], 16)));
        let mut out = vec![t.value(y).clone(), t.value(z).clone(), gz.wrt(qkv).unwrap().clone()];
        out.extend([q, k, v].map(|x: Var| gy.wrt(x).unwrap().clone()));
        out
    })
}

#[test]
fn bit_identical_with_one_and_two_threads() {
    let (one, two) = (run_in_pool(1), run_in_pool(2));
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "array {i} differs");
    }
}

/// softmax(q·kᵀ/√D, future masked)·v built from separate tape ops (the unfused reference).
fn composite(t: &mut Tape<f64>, q: Var, k: Var, v: Var, causal: bool) -> Var {
    let (n, d) = (t.shape(q)[2], t.shape(q)[3]);
    let kt = t.transpose(k, 2, 3);
    let s = t.matmul(q, kt);
    let s = t.mul_scalar(s, 1.0 / (d as f64).sqrt());
    let s = if causal {
        // Future scores become -1e30, whose exp underflows to exactly zero.
        let mask = ArrayD::from_shape_fn(IxDyn(&[n, n]), |ij| ij[1] <= ij[0]);
        let neg = t.constant(ArrayD::from_elem(IxDyn(&[1]), -1e30));
        t.select(&mask, s, neg)
    } else {
        s
    };
    let p = t.softmax(s);
    t.matmul(p, v)
}

#[test]
fn fused_agrees_with_the_composite_graph() {
    // Inputs doubled, so that the softmax rows are far from uniform.
    for causal in [false, true] {
        let errs = fused_minus_composite(&[2, 2, 6, 4], [21, 22, 23, 24], 2.0, causal);
        for (i, err) in errs.into_iter().enumerate() {
            assert!(err < 1e-12, "causal={causal}, array {i} (y, dq, dk, dv): max difference {err}");
        }
    }
}

/// Largest differences between the fused op and the composed graph on inputs drawn from `seeds`
/// and multiplied by `scale` (value, dq, dk, dv).
fn fused_minus_composite(shape: &[usize], seeds: [u64; 4], scale: f64, causal: bool) -> Vec<f64> {
    let [q0, k0, v0, g0] = seeds.map(|s| filled(shape, s).mapv(|x| scale * x));
    let run = |fused: bool| {
        let mut t = Tape::<f64>::new();
        let [q, k, v] = [&q0, &k0, &v0].map(|x| t.input(x.clone()));
        let y = if fused { t.attention(q, k, v, causal) } else { composite(&mut t, q, k, v, causal) };
        let g = t.backward_with(y, g0.clone());
        let mut out = vec![t.value(y).clone()];
        out.extend([q, k, v].map(|x| g.wrt(x).unwrap().clone()));
        out
    };
    run(true).iter().zip(&run(false)).map(|(a, b)| max_diff(a, b)).collect()
}

#[test]
fn blocked_causal_attention_matches_the_composed_graph_across_blocks() {
    // T = 75 spans three causal row blocks (the last one ragged), with and without the mask.
    for causal in [true, false] {
        for (i, err) in
            fused_minus_composite(&[1, 2, 75, 8], [40, 41, 42, 43], 1.0, causal).into_iter().enumerate()
        {
            assert!(err < 1e-12, "causal={causal}: array {i} (value, dq, dk, dv) differs by {err}");
        }
    }
}

#[test]
fn rollout_sized_heads_match_the_composed_graph() {
    // The GRPO rollout's shape at config S (T = 40, D = 32: two row blocks, the second short),
    // exactly two blocks, an odd head size, and a single position.
    for shape in [[2, 2, 40, 32], [1, 1, 64, 16], [1, 2, 41, 37], [1, 1, 1, 3]] {
        for causal in [true, false] {
            for (i, err) in
                fused_minus_composite(&shape, [50, 51, 52, 53], 1.0, causal).into_iter().enumerate()
            {
                assert!(
                    err < 1e-12,
                    "{shape:?} causal={causal}: array {i} (value, dq, dk, dv) differs by {err}"
                );
            }
        }
    }
}
