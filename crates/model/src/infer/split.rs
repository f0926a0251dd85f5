//! How one call of [`Gpt::forward_cached`] shares its work between threads.
//!
//! - **Columns** (few rows: a batch-1 decode step): every op runs once over all rows, each
//!   matrix product split over the threads by output column, so that each core streams its share
//!   of the weights once. About twenty fork-joins a call.
//! - **Rows** (many rows): the rows are cut into one contiguous share per thread, each share
//!   running through the whole model on its own thread: every thread reads every weight, but
//!   there is one fork-join a call instead of one an op, no op waits on a serial one (the layer
//!   norms, the residual adds, the moves of column tiles), and each thread's rows stay in its own
//!   cache. A share must own its slots' keys and values, so rows are cut between two slots,
//!   never inside one slot's run of positions, and only when the slots ascend down the rows
//!   (what the sampler's and the scorer's calls do); other calls split by columns.
//!
//! Both compute each element with the same operations, so the split never changes a bit.

use pglm_autograd::Float;

use super::Weights;
use super::matmul::ROWS;
use crate::Gpt;

/// The keys and values of the slots `first..` of a [`super::KvCache`] (`[slot][layer][head]`,
/// one slot's values contiguous): all slots for a call split by columns, a contiguous range for
/// each share of a call split by rows.
pub(crate) struct Slots<'a, F> {
    first: usize,
    pub(crate) n_layer: usize,
    pub(crate) n_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) stride: usize,
    pub(crate) k: &'a mut [F],
    pub(crate) v: &'a mut [F],
}

impl<'a, F> Slots<'a, F> {
    pub(crate) fn new(
        n_layer: usize,
        n_head: usize,
        head_dim: usize,
        stride: usize,
        k: &'a mut [F],
        v: &'a mut [F],
    ) -> Self {
        Slots { first: 0, n_layer, n_head, head_dim, stride, k, v }
    }

    /// Where one head of one slot starts, in `k` and in `v` alike.
    #[inline]
    pub(crate) fn head_base(&self, layer: usize, slot: usize, head: usize) -> usize {
        (((slot - self.first) * self.n_layer + layer) * self.n_head + head) * self.stride * self.head_dim
    }

    /// The slots before `slot`, and `slot` with the ones after it.
    fn split_at(self, slot: usize) -> (Self, Self) {
        let at = (slot - self.first) * self.n_layer * self.n_head * self.head_dim * self.stride;
        let (k0, k1) = self.k.split_at_mut(at);
        let (v0, v1) = self.v.split_at_mut(at);
        let (n_layer, n_head, head_dim, stride) = (self.n_layer, self.n_head, self.head_dim, self.stride);
        (
            Slots { first: self.first, n_layer, n_head, head_dim, stride, k: k0, v: v0 },
            Slots { first: slot, n_layer, n_head, head_dim, stride, k: k1, v: v1 },
        )
    }
}

/// A call's rows and the scratch buffers that belong to them (each `rows.len()` rows of its own
/// width), so that a share of the rows can take its share of every buffer.
pub(crate) struct Batch<'a, F> {
    pub(crate) rows: &'a [(usize, u32)],
    pub(crate) pos: &'a [usize],
    pub(crate) x: &'a mut [F],
    pub(crate) xn: &'a mut [F],
    pub(crate) qkv: &'a mut [F],
    pub(crate) att: &'a mut [F],
    pub(crate) h4: &'a mut [F],
    pub(crate) y: &'a mut [F],
    pub(crate) scores: &'a mut [F],
    pub(crate) tiles: &'a mut [F],
    pub(crate) logits: &'a mut [F],
}

impl<'a, F> Batch<'a, F> {
    /// Rows `..r` and rows `r..`.
    fn split_at(self, r: usize) -> (Self, Self) {
        let n = self.rows.len();
        fn cut<T>(b: &mut [T], n: usize, r: usize) -> (&mut [T], &mut [T]) {
            b.split_at_mut(b.len() / n * r)
        }
        let (rows0, rows1) = self.rows.split_at(r);
        let (pos0, pos1) = self.pos.split_at(r);
        let (x0, x1) = cut(self.x, n, r);
        let (xn0, xn1) = cut(self.xn, n, r);
        let (qkv0, qkv1) = cut(self.qkv, n, r);
        let (att0, att1) = cut(self.att, n, r);
        let (h40, h41) = cut(self.h4, n, r);
        let (y0, y1) = cut(self.y, n, r);
        let (sc0, sc1) = cut(self.scores, n, r);
        let (t0, t1) = cut(self.tiles, n, r);
        let (l0, l1) = cut(self.logits, n, r);
        (
            Batch {
                rows: rows0,
                pos: pos0,
                x: x0,
                xn: xn0,
                qkv: qkv0,
                att: att0,
                h4: h40,
                y: y0,
                scores: sc0,
                tiles: t0,
                logits: l0,
            },
            Batch {
                rows: rows1,
                pos: pos1,
                x: x1,
                xn: xn1,
                qkv: qkv1,
                att: att1,
                h4: h41,
                y: y1,
                scores: sc1,
                tiles: t1,
                logits: l1,
            },
        )
    }
}

/// Runs the model on `b`, split by rows when the call allows it (see the module docs).
pub(crate) fn run<F: Float>(model: &Gpt<F>, w: &Weights<'_, F>, mut slots: Slots<'_, F>, b: Batch<'_, F>) {
    let threads = rayon::current_num_threads();
    if threads > 1 && by_rows(b.rows, threads) {
        shares(model, w, slots, b, threads);
    } else {
        model.forward_rows(w, &mut slots, b, true);
    }
}

/// Whether a call may split by rows: a whole register tile of rows per thread, more than one
/// slot, and slots that never go down (so that each slot's rows are one run and each share's
/// slots one range). Fewer rows split by columns: a share of less than a tile would run the
/// one-row kernel over all the weights. (At batch 16 of config M, 8 rows a thread, the row split
/// took 0.83-0.84 ms a decode step against 0.93-0.95 by columns, though each thread then reads
/// all 13 MB of weights instead of half.)
fn by_rows(rows: &[(usize, u32)], threads: usize) -> bool {
    rows.len() >= ROWS * threads
        && rows.first().map(|r| r.0) != rows.last().map(|r| r.0)
        && rows.windows(2).all(|w| w[0].0 <= w[1].0)
}

/// Splits `b` into `tasks` shares of about equal rows, cut between slots, and runs each on its
/// own thread (halving recursively: `tasks / 2` shares on the left, the rest on the right).
fn shares<F: Float>(
    model: &Gpt<F>,
    w: &Weights<'_, F>,
    mut slots: Slots<'_, F>,
    b: Batch<'_, F>,
    tasks: usize,
) {
    let n = b.rows.len();
    let target = n * (tasks / 2) / tasks.max(1);
    let Some(cut) = (tasks > 1).then(|| nearest_cut(b.rows, target)).flatten() else {
        model.forward_rows(w, &mut slots, b, false);
        return;
    };
    let (left_slots, right_slots) = slots.split_at(b.rows[cut].0);
    let (left, right) = b.split_at(cut);
    rayon::join(
        || shares(model, w, left_slots, left, tasks / 2),
        || shares(model, w, right_slots, right, tasks - tasks / 2),
    );
}

/// The row index nearest `target` where a new slot's run starts (never 0), if there is one.
fn nearest_cut(rows: &[(usize, u32)], target: usize) -> Option<usize> {
    let starts = |i: usize| i > 0 && i < rows.len() && rows[i].0 != rows[i - 1].0;
    (0..rows.len()).flat_map(|d| [target + d, target.wrapping_sub(d)]).find(|&i| starts(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_between_slots_nearest_the_target() {
        let rows: Vec<(usize, u32)> = [0, 0, 0, 1, 1, 1, 1, 1, 2, 3].iter().map(|&s| (s, 0)).collect();
        assert_eq!(nearest_cut(&rows, 5), Some(3));
        assert_eq!(nearest_cut(&rows, 7), Some(8));
        assert_eq!(nearest_cut(&rows, 0), Some(3));
        assert_eq!(nearest_cut(&rows[..3], 1), None);
    }

    #[test]
    fn only_ascending_slots_of_many_rows_split_by_rows() {
        let asc: Vec<(usize, u32)> = (0..64).map(|i| (i / 2, 0)).collect();
        assert!(by_rows(&asc, 2));
        assert!(by_rows(&asc[..2 * ROWS], 2));
        assert!(!by_rows(&asc[..2 * ROWS - 1], 2));
        let mut down = asc.clone();
        down.swap(0, 63);
        assert!(!by_rows(&down, 2));
        let one_slot: Vec<(usize, u32)> = (0..64).map(|_| (5, 0)).collect();
        assert!(!by_rows(&one_slot, 2));
    }
}
