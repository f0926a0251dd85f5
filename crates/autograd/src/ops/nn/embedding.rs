//! Token embedding: a row lookup `out[s, :] = weight[ids[s], :]`.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::{checked_ids, into_standard, rows_per_task};
use crate::tape::Backward;
use crate::{Float, Tape, Var};

/// Backward record: the weight and the ids (in logical order) it was indexed with.
pub(crate) struct Embedding {
    weight: Var,
    ids: Vec<u32>,
}

impl Embedding {
    /// `dweight[v, :] += sum over positions s with ids[s] = v of dy[s, :]` ([`scatter_add_rows`]).
    pub(crate) fn backward<F: Float>(&self, grad_out: ArrayD<F>, ctx: &mut Backward<'_, F>) {
        if !ctx.needs(self.weight) {
            return;
        }
        let dy = into_standard(grad_out);
        scatter_add_rows(&self.ids, dy.as_slice().expect("standard layout"), ctx.slot(self.weight));
    }
}

/// `dw[r, :] += Σ dy[s, :]` over the positions `s` with `ids[s] = r`, `dw` a `(V, C)` gradient
/// slot and `dy` the positions' rows, `C` values each.
///
/// The positions are grouped by id (a counting sort that keeps position order), then the rows
/// of `dw` are filled in parallel, each summing its positions in increasing order: the same
/// additions in the same order as a sequential scatter, whatever the thread count.
pub(crate) fn scatter_add_rows<F: Float>(ids: &[u32], dy: &[F], dw: &mut ArrayD<F>) {
    let (v, c) = (dw.shape()[0], dw.shape()[1]);
    if c == 0 {
        return;
    }
    let dw = rows_mut(dw);
    // start[r]..start[r + 1] indexes the positions of id r in `by_id`.
    let mut start = vec![0usize; v + 1];
    for &id in ids {
        start[id as usize + 1] += 1;
    }
    for r in 0..v {
        start[r + 1] += start[r];
    }
    let mut fill = start.clone();
    let mut by_id = vec![0usize; ids.len()];
    for (s, &id) in ids.iter().enumerate() {
        by_id[fill[id as usize]] = s;
        fill[id as usize] += 1;
    }
    dw.par_chunks_mut(c).enumerate().with_min_len(rows_per_task(c)).for_each(|(r, row)| {
        for &s in &by_id[start[r]..start[r + 1]] {
            for (g, &d) in row.iter_mut().zip(&dy[s * c..(s + 1) * c]) {
                *g += d;
            }
        }
    });
}

/// The values of a `(V, C)` gradient slot in row-major order (rearranged first if some op stored
/// it otherwise), for writing row by row.
pub(crate) fn rows_mut<F: Float>(dw: &mut ArrayD<F>) -> &mut [F] {
    if !dw.is_standard_layout() {
        *dw = dw.as_standard_layout().into_owned();
    }
    dw.as_slice_mut().expect("standard layout")
}

impl<F: Float> Tape<F> {
    /// Token embedding: `weight` of shape `(V, C)`, `ids` of any shape `S`; returns `(S..., C)` with
    /// `out[s, :] = weight[ids[s], :]`. The gradient scatter-adds back into the weight's rows
    /// (repeated ids accumulate), deterministically.
    ///
    /// # Panics
    /// If `weight` is not 2-D, or an id is `>= V` (the message names the op, the id and `V`).
    pub fn embedding(&mut self, weight: Var, ids: &ArrayD<u32>) -> Var {
        let wshape = self.shape(weight);
        assert!(wshape.len() == 2, "embedding: the weight must be 2-D (V, C), got shape {wshape:?}");
        let (v, c) = (wshape[0], wshape[1]);
        let idv = checked_ids("embedding", ids, v, "the vocabulary (rows of the weight) has");
        let mut shape = ids.shape().to_vec();
        shape.push(c);
        let mut out = crate::fill::zero_vec(idv.len() * c);
        if c > 0 {
            let w = self.value(weight).as_standard_layout();
            let w = w.as_slice().expect("standard layout");
            out.par_chunks_mut(c).zip(idv.par_iter()).with_min_len(rows_per_task(c)).for_each(|(o, &id)| {
                o.copy_from_slice(&w[id as usize * c..(id as usize + 1) * c]);
            });
        }
        let value = ArrayD::from_shape_vec(IxDyn(&shape), out).expect("length matches shape");
        self.push(value, &[weight], move || {
            crate::ops::Op::Nn(super::Op::Embedding(Embedding { weight, ids: idv }))
        })
    }
}

#[cfg(any(test, feature = "gradcheck"))]
pub(crate) fn gradcheck_cases() -> Vec<crate::gradcheck::Case> {
    use proptest::prelude::*;

    use super::ids_from_ints;
    use crate::gradcheck::{Sample, array, shape};
    use crate::gradcheck_case;

    fn embed<F: Float>(t: &mut Tape<F>, x: &[Var], s: &Sample) -> Var {
        t.embedding(x[0], &ids_from_ints(&s.ints))
    }
    // Weight (V, C) and ids of rank 1..=2; the last id repeats the first so the scatter-add
    // always accumulates at least one row twice.
    let strategy = || {
        (1usize..=4, 1usize..=4, shape(2, 3))
            .prop_flat_map(|(v, c, mut ids_shape)| {
                ids_shape[0] += 1; // at least two positions
                let n: usize = ids_shape.iter().product();
                (array(vec![v, c], -2.0, 2.0), prop::collection::vec(0..v, n), Just(ids_shape), any::<u64>())
            })
            .prop_map(|(w, mut ids, ids_shape, seed)| {
                let n = ids.len();
                ids[n - 1] = ids[0];
                let mut ints = vec![ids_shape.len()];
                ints.extend(&ids_shape);
                ints.extend(ids);
                Sample { ints, seed_weights: seed, ..Sample::new(vec![w]) }
            })
            .boxed()
    };
    vec![gradcheck_case!("embedding (repeated ids)", strategy, embed)]
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, array};

    use crate::Tape;

    #[test]
    fn embedding_gathers_rows_and_scatter_adds_repeated_ids() {
        let mut t = Tape::<f64>::new();
        let w = t.input(array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]].into_dyn());
        let ids = array![[2u32, 0, 2]].into_dyn();
        let y = t.embedding(w, &ids);
        assert_eq!(t.shape(y), &[1, 3, 2]);
        assert_eq!(t.value(y), &array![[[5.0, 6.0], [1.0, 2.0], [5.0, 6.0]]].into_dyn());
        let seed = array![[[1.0, 10.0], [100.0, 1000.0], [0.5, 0.25]]].into_dyn();
        let g = t.backward_with(y, seed);
        let expect = array![[100.0, 1000.0], [0.0, 0.0], [1.5, 10.25]].into_dyn();
        assert_eq!(g.wrt(w).unwrap(), &expect);
    }

    #[test]
    #[should_panic(
        expected = "embedding: id 5 at flat position 1 is out of range: the vocabulary (rows of the weight) has V = 3"
    )]
    fn embedding_id_out_of_range_panics_with_the_id_and_v() {
        let mut t = Tape::<f32>::new();
        let w = t.input(ArrayD::zeros(vec![3, 4]));
        t.embedding(w, &ndarray::arr1(&[0u32, 5]).into_dyn());
    }
}
