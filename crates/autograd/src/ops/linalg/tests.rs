//! Values and gradients of `matmul`, `matmul_t` and `linear` against plain ndarray products.

use ndarray::{Array, Array1, Array2, ArrayD, Axis, Ix2, IxDyn, s};

use crate::test_util::filled;
use crate::{Float, Tape};

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-12)
}

fn mat(x: &ArrayD<f64>) -> Array2<f64> {
    x.clone().into_dimensionality().unwrap()
}

#[test]
fn matmul_2d_value_and_grads() {
    let (a0, b0) = (filled(&[5, 3], 1), filled(&[3, 4], 2));
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(a0.clone()), t.input(b0.clone()));
    let c = t.matmul(a, b);
    let want = mat(&a0).dot(&mat(&b0));
    assert!(close(t.value(c), &want.into_dyn()));
    let g0 = filled(&[5, 4], 3);
    let grads = t.backward_with(c, g0.clone());
    assert!(close(grads.wrt(a).unwrap(), &mat(&g0).dot(&mat(&b0).t()).into_dyn()));
    assert!(close(grads.wrt(b).unwrap(), &mat(&a0).t().dot(&mat(&g0)).into_dyn()));
}

#[test]
fn matmul_batched_matches_per_matrix_products() {
    let (a0, b0) = (filled(&[2, 3, 4, 5], 4), filled(&[2, 3, 5, 2], 5));
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(a0.clone()), t.input(b0.clone()));
    let c = t.matmul(a, b);
    assert_eq!(t.shape(c), &[2, 3, 4, 2]);
    let g0 = filled(&[2, 3, 4, 2], 6);
    let grads = t.backward_with(c, g0.clone());
    for i in 0..2 {
        for j in 0..3 {
            let [ai, bi, gi] =
                [&a0, &b0, &g0].map(|x| x.slice(s![i, j, .., ..]).into_dimensionality::<Ix2>().unwrap());
            let ci = t.value(c).slice(s![i, j, .., ..]).to_owned();
            assert!(close(&ci.into_dyn(), &ai.dot(&bi).into_dyn()));
            let da = grads.wrt(a).unwrap().slice(s![i, j, .., ..]).to_owned();
            assert!(close(&da.into_dyn(), &gi.dot(&bi.t()).into_dyn()));
            let db = grads.wrt(b).unwrap().slice(s![i, j, .., ..]).to_owned();
            assert!(close(&db.into_dyn(), &ai.t().dot(&gi).into_dyn()));
        }
    }
}

#[test]
fn matmul_with_2d_b_folds_the_batch_and_sums_db() {
    let (a0, b0) = (filled(&[3, 4, 5], 7), filled(&[5, 6], 8));
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(a0.clone()), t.input(b0.clone()));
    let c = t.matmul(a, b);
    assert_eq!(t.shape(c), &[3, 4, 6]);
    let g0 = filled(&[3, 4, 6], 9);
    let grads = t.backward_with(c, g0.clone());
    let a2 = a0.clone().into_shape_with_order((12, 5)).unwrap();
    let g2 = g0.clone().into_shape_with_order((12, 6)).unwrap();
    let b2 = mat(&b0);
    assert!(close(&t.value(c).clone(), &a2.dot(&b2).into_shape_with_order(IxDyn(&[3, 4, 6])).unwrap()));
    assert!(close(grads.wrt(b).unwrap(), &a2.t().dot(&g2).into_dyn()));
    let da = g2.dot(&b2.t()).into_shape_with_order(IxDyn(&[3, 4, 5])).unwrap();
    assert!(close(grads.wrt(a).unwrap(), &da));
}

#[test]
fn matmul_of_a_value_with_itself_accumulates_both_paths() {
    // c = x·x: dX = dC·xᵀ + xᵀ·dC (both products land in the same slot).
    let x0 = filled(&[4, 4], 10);
    let mut t = Tape::<f64>::new();
    let x = t.input(x0.clone());
    let c = t.matmul(x, x);
    let g0 = filled(&[4, 4], 11);
    let grads = t.backward_with(c, g0.clone());
    let (xm, gm) = (mat(&x0), mat(&g0));
    assert!(close(grads.wrt(x).unwrap(), &(gm.dot(&xm.t()) + xm.t().dot(&gm)).into_dyn()));
}

#[test]
fn matmul_accepts_transposed_operands() {
    let a0 = filled(&[3, 5], 12);
    let at = mat(&a0).reversed_axes().into_dyn(); // (5, 3), column-major memory
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(at.clone()), t.input(filled(&[3, 2], 13)));
    let c = t.matmul(a, b);
    let want = mat(&at).dot(&mat(t.value(b)));
    assert!(close(t.value(c), &want.into_dyn()));
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3] and [4, 5]")]
fn matmul_rejects_mismatched_inner_dims() {
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(ArrayD::zeros(IxDyn(&[2, 3]))), t.input(ArrayD::zeros(IxDyn(&[4, 5]))));
    t.matmul(a, b);
}

#[test]
#[should_panic(expected = "matmul: shapes")]
fn matmul_rejects_different_batch_dims() {
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(ArrayD::zeros(IxDyn(&[2, 3, 4]))), t.input(ArrayD::zeros(IxDyn(&[3, 4, 5]))));
    t.matmul(a, b);
}

#[test]
fn linear_value_and_grads() {
    let (x0, w0, b0) = (filled(&[2, 3, 4], 14), filled(&[4, 5], 15), filled(&[5], 16));
    let mut t = Tape::<f64>::new();
    let (x, w, b) = (t.input(x0.clone()), t.input(w0.clone()), t.input(b0.clone()));
    let y = t.linear(x, w, Some(b));
    let g0 = filled(&[2, 3, 5], 17);
    let grads = t.backward_with(y, g0.clone());
    let x2 = x0.clone().into_shape_with_order((6, 4)).unwrap();
    let g2 = g0.clone().into_shape_with_order((6, 5)).unwrap();
    let b1: Array1<f64> = b0.clone().into_dimensionality().unwrap();
    let want = (x2.dot(&mat(&w0)) + &b1).into_shape_with_order(IxDyn(&[2, 3, 5])).unwrap();
    assert!(close(t.value(y), &want));
    let dx = g2.dot(&mat(&w0).t()).into_shape_with_order(IxDyn(&[2, 3, 4])).unwrap();
    assert!(close(grads.wrt(x).unwrap(), &dx));
    assert!(close(grads.wrt(w).unwrap(), &x2.t().dot(&g2).into_dyn()));
    assert!(close(grads.wrt(b).unwrap(), &g2.sum_axis(Axis(0)).into_dyn()));
}

#[test]
fn matmul_t_equals_matmul_with_a_transposed_copy() {
    let (a0, b0) = (filled(&[2, 5, 3], 30), filled(&[4, 3], 31));
    let g0 = filled(&[2, 5, 4], 32);
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(a0.clone()), t.input(b0.clone()));
    let c = t.matmul_t(a, b);
    let bt = t.transpose(b, 0, 1);
    let c2 = t.matmul(a, bt);
    assert!(close(t.value(c), t.value(c2)));
    let g1 = t.backward_with(c, g0.clone());
    let g2 = t.backward_with(c2, g0);
    assert!(close(g1.wrt(a).unwrap(), g2.wrt(a).unwrap()));
    assert!(close(g1.wrt(b).unwrap(), g2.wrt(b).unwrap()));
}

#[test]
#[should_panic(expected = "matmul_t: shapes [2, 3] and [3, 4]")]
fn matmul_t_rejects_mismatched_shapes() {
    let mut t = Tape::<f64>::new();
    let (a, b) = (t.input(ArrayD::zeros(IxDyn(&[2, 3]))), t.input(ArrayD::zeros(IxDyn(&[3, 4]))));
    t.matmul_t(a, b);
}

#[test]
fn linear_without_bias_equals_matmul() {
    let (x0, w0) = (filled(&[7, 3], 18), filled(&[3, 2], 19));
    let mut t = Tape::<f64>::new();
    let (x, w) = (t.input(x0), t.input(w0));
    let (y1, y2) = (t.linear(x, w, None), t.matmul(x, w));
    assert_eq!(t.value(y1), t.value(y2));
}

/// One node as both input and weight: its gradient sums the two products' (which then run one
/// after the other, into the same slot).
#[test]
fn linear_of_a_matrix_with_itself_gets_both_gradients() {
    let (x0, g0) = (filled(&[3, 3], 40), filled(&[3, 3], 41));
    let mut t = Tape::<f64>::new();
    let x = t.input(x0.clone());
    let y = t.linear(x, x, None);
    let grads = t.backward_with(y, g0.clone());
    let (x2, g2) = (mat(&x0), mat(&g0));
    let want = g2.dot(&x2.t()) + x2.t().dot(&g2);
    assert!(close(grads.wrt(x).unwrap(), &want.into_dyn()));
}

#[test]
#[should_panic(expected = "linear: input [2, 3], weight [4, 5]")]
fn linear_rejects_mismatched_weight() {
    let mut t = Tape::<f64>::new();
    let (x, w) = (t.input(ArrayD::zeros(IxDyn(&[2, 3]))), t.input(ArrayD::zeros(IxDyn(&[4, 5]))));
    t.linear(x, w, None);
}

/// Forward and backward of a linear layer and a batched matmul, in f32, in a rayon pool of `threads`.
fn run_in_pool<F: Float>(threads: usize) -> Vec<ArrayD<F>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let cast = |x: ArrayD<f64>| x.mapv(F::of);
        let mut t = Tape::<F>::new();
        let x = t.input(cast(filled(&[4, 130, 300], 20)));
        let w = t.input(cast(filled(&[300, 200], 21)));
        let b = t.input(cast(filled(&[200], 22)));
        let y = t.linear(x, w, Some(b));
        let k = t.input(cast(filled(&[4, 200, 50], 23)));
        let z = t.matmul(y, k);
        let e = t.input(cast(filled(&[70, 50], 25)));
        let z = t.matmul_t(z, e);
        let grads = t.backward_with(z, cast(filled(&[4, 130, 70], 24)));
        let mut out = vec![t.value(z).clone()];
        out.extend([x, w, b, k, e].iter().map(|&v| grads.wrt(v).unwrap().clone()));
        out
    })
}

#[test]
fn ops_are_bit_identical_with_one_and_two_threads() {
    let (one, two) = (run_in_pool::<f32>(1), run_in_pool::<f32>(2));
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "array {i} differs");
    }
}

#[test]
fn column_sums_are_exact_on_integers() {
    let g = Array::from_shape_fn((1000, 600), |(i, j)| ((i * 7 + j) % 5) as f32);
    let mut db = Array1::<f32>::ones(600);
    super::add_column_sums(g.view(), db.view_mut());
    let want = g.sum_axis(Axis(0)) + 1.0;
    assert_eq!(db, want);
}
