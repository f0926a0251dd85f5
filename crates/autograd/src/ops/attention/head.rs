//! One attention head, forward and backward, on operands stored as contiguous rows.
//!
//! A head's q, k and v are `T x D` with `T` and `D` small (39 x 32 in a GRPO update at config S),
//! so a general GEMM spends more on setting up each product than on the product, and computes the
//! masked upper triangle it cannot skip. The kernels here work in register tiles of `R` rows and
//! 16 columns, skip what the causal mask hides, and stream their operands row by row. The packed
//! ops first [`unpack`] a batch row head by head: a packed qkv row is `3C` wide, so a head's rows
//! read in place sit 1.5 KB apart and crowd the same L1 sets. A wider tile (32 columns) was not
//! kept: the compiler left its accumulators in memory and ran it scalar, several times slower.
//!
//! Three products cover the forward and the backward (equations in the parent module):
//!
//! ```text
//! scores:  out[i, j] = Σ_d a[i, d] · bt[d, j]       S = q·kᵀ, dP = dO·vᵀ       (bt = kᵀ, vᵀ)
//! mix:     out[i, :] = Σ_j p[i, j] · m[j, :]        O = P·v,  dQ = dS·k
//! mix_t:   out[j, :] = Σ_i p[i, j] · m[i, :]        dV = Pᵀ·dO, dK = dSᵀ·q
//! ```
//!
//! Every output element is one chain of fmas in a fixed order (over `d`, `j` or `i` ascending),
//! so its bits depend only on the head's data, never on the tile or the thread that computes it.
//! Under the causal mask `p[i, j]` is exactly zero for `j > i`: a tile's sums run to the last
//! column any of its rows can see, and the zeros add nothing.

use crate::Float;
use crate::ops::nn::kernels::{dot, softmax_row_in_place};

/// Rows per register tile: four independent chains of fmas cover the fma's latency.
const R: usize = 4;

/// Columns of one score block (one AVX-512 register of f32).
const W: usize = 16;

/// Where a head's `T x D` operand sits in its batch row's buffer: row `i` is
/// `buf[off + i·ld..][..D]` (a packed qkv row holds all heads of q, k and v side by side).
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub off: usize,
    pub ld: usize,
}

impl At {
    #[inline(always)]
    fn row(self, i: usize) -> usize {
        self.off + i * self.ld
    }
}

/// A head's shape: `T` positions of `D` values, and whether the future is masked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub t: usize,
    pub d: usize,
    pub causal: bool,
}

impl Dims {
    /// `T` rounded up to whole score blocks.
    fn tp(self) -> usize {
        self.t.div_ceil(W) * W
    }

    /// The keys row `i` can see: `i + 1` under the causal mask, all `T` otherwise.
    fn visible(self, i: usize) -> usize {
        if self.causal { i + 1 } else { self.t }
    }
}

/// Per-thread buffers, reused across the heads one thread computes.
#[derive(Default)]
pub(crate) struct Scratch<F> {
    /// `kᵀ` in the forward, `vᵀ` in the backward: `D x tp`, zero-padded columns.
    bt: Vec<F>,
    /// Scores or dP, `T x tp`.
    s: Vec<F>,
    /// dS, `T x T`.
    ds: Vec<F>,
}

/// The first rows of the `R`-row tiles that cover `0..t`, and the rows left to one-row tiles.
///
/// When `t` is not a multiple of `R`, the last tile overlaps the one before it rather than
/// leaving rows to one-row tiles, which the compiler does not vectorise. A row computed twice
/// gets the same bits both times: its sums are the same fmas in the same order, plus, in the
/// wider tile, products with probabilities that are exactly zero.
fn tiles(t: usize) -> (impl Iterator<Item = usize>, std::ops::Range<usize>) {
    let overlap = (t >= R && !t.is_multiple_of(R)).then(|| t - R);
    let singles = if t < R { 0..t } else { t..t };
    ((0..t / R).map(|i| i * R).chain(overlap), singles)
}

/// Rearranges one batch row, given as its `T` positions' rows, each `heads` blocks of `hs` values
/// side by side (a packed qkv row holds q, k and v of every head), into `dst` block by block:
/// block `g` is the `T x hs` rows at `g·T·hs`.
///
/// The heads then read their operands from contiguous rows. Reading a packed row from start to
/// end lets the prefetcher stream it; a head's rows read in place are 1.5 KB apart, and copying
/// them head by head was a quarter of the op's profile at the GRPO update's shapes (unpacking
/// once made its backward about a tenth faster there).
pub(crate) fn unpack<'a, F: Float>(
    rows: impl ExactSizeIterator<Item = &'a [F]>,
    (heads, hs): (usize, usize),
    dst: &mut Vec<F>,
) {
    let t = rows.len();
    // Every value is overwritten: only a new length needs the fill.
    dst.resize(t * heads * hs, F::zero());
    for (i, row) in rows.enumerate() {
        for (g, block) in row[..heads * hs].chunks_exact(hs).enumerate() {
            copy_block(block, &mut dst[(g * t + i) * hs..(g * t + i + 1) * hs]);
        }
    }
}

/// `dst <- src` 16 values at a time: a head's row is too short for a `memcpy` call to pay (the
/// calls were an eighth of the packed op's time).
#[inline(always)]
fn copy_block<F: Float>(src: &[F], dst: &mut [F]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in d.by_ref().zip(s.by_ref()) {
        let s: &[F; 16] = s.try_into().expect("16 values");
        let d: &mut [F; 16] = d.try_into().expect("16 values");
        *d = *s;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// The inverse of [`unpack`]: writes the blocks of `src` back side by side into the rows of `dst`.
pub(crate) fn pack<F: Float>(src: &[F], (t, heads, hs): (usize, usize, usize), dst: &mut [F]) {
    for (i, row) in dst.chunks_exact_mut(heads * hs).take(t).enumerate() {
        for (g, block) in row.chunks_exact_mut(hs).enumerate() {
            copy_block(&src[(g * t + i) * hs..(g * t + i + 1) * hs], block);
        }
    }
}

/// Copies the operand `src` at `at` into `dst` transposed, `D x tp`, the columns past `T` zero.
fn transpose_in<F: Float>(src: &[F], at: At, dims: Dims, dst: &mut Vec<F>) {
    let (t, d, tp) = (dims.t, dims.d, dims.tp());
    dst.clear();
    dst.resize(d * tp, F::zero());
    for (dd, col) in dst.chunks_exact_mut(tp).enumerate() {
        for (i, x) in col[..t].iter_mut().enumerate() {
            *x = src[at.row(i) + dd];
        }
    }
}

/// `scores` on rows `r0..r0 + G` and columns `0..cols` (whole blocks): `out` rows are `tp` wide,
/// each element `scale · Σ_d a[i, d] bt[d, j]`.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn scores_tile<F: Float, const G: usize>(
    (a, at): (&[F], At),
    bt: &[F],
    (d, tp): (usize, usize),
    (r0, cols): (usize, usize),
    scale: F,
    out: &mut [F],
) {
    let rows: [&[F]; G] = std::array::from_fn(|g| &a[at.row(r0 + g)..at.row(r0 + g) + d]);
    for c0 in (0..cols).step_by(W) {
        let mut acc = [[F::zero(); W]; G];
        for dd in 0..d {
            let b: &[F; W] = bt[dd * tp + c0..dd * tp + c0 + W].try_into().expect("a score block");
            for g in 0..G {
                let x = rows[g][dd];
                for c in 0..W {
                    acc[g][c] = x.mul_add(b[c], acc[g][c]);
                }
            }
        }
        for g in 0..G {
            let o = &mut out[(r0 + g) * tp + c0..(r0 + g) * tp + c0 + W];
            for c in 0..W {
                o[c] = acc[g][c] * scale;
            }
        }
    }
}

/// `out[i, j] = scale · Σ_d a[i, d] bt[d, j]` for every row `i` of `a` and the score blocks its
/// tile can see; `out` is `T x tp`, its other entries untouched.
fn scores<F: Float>(a: (&[F], At), bt: &[F], dims: Dims, scale: F, out: &mut [F]) {
    let (t, tp) = (dims.t, dims.tp());
    let cols = |last: usize| (dims.visible(last).div_ceil(W) * W).min(tp);
    let (starts, singles) = tiles(t);
    for r0 in starts {
        scores_tile::<F, R>(a, bt, (dims.d, tp), (r0, cols(r0 + R - 1)), scale, out);
    }
    for r0 in singles {
        scores_tile::<F, 1>(a, bt, (dims.d, tp), (r0, cols(r0)), scale, out);
    }
}

/// Columns `c0..c0 + B` of `mix` on rows `r0..r0 + G`, the sum over `j < n`.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn mix_tile<F: Float, const G: usize, const B: usize>(
    (p, t): (&[F], usize),
    (m, at_m): (&[F], At),
    (r0, n, c0): (usize, usize, usize),
    scale: F,
    (out, at_o): (&mut [F], At),
) {
    let mut acc = [[F::zero(); B]; G];
    for j in 0..n {
        let mv: &[F; B] = m[at_m.row(j) + c0..at_m.row(j) + c0 + B].try_into().expect("a column block");
        let pj: [F; G] = std::array::from_fn(|g| p[(r0 + g) * t + j]);
        for g in 0..G {
            for c in 0..B {
                acc[g][c] = pj[g].mul_add(mv[c], acc[g][c]);
            }
        }
    }
    for g in 0..G {
        let o = &mut out[at_o.row(r0 + g) + c0..at_o.row(r0 + g) + c0 + B];
        for c in 0..B {
            o[c] = acc[g][c] * scale;
        }
    }
}

/// `out[i, :] = scale · Σ_{j < visible(i)} p[i, j] m[j, :]`: `p` is `T x T` (zero past what each
/// row sees); the tiles run over columns in blocks of 16, then 1.
fn mix<F: Float>(p: &[F], m: (&[F], At), dims: Dims, scale: F, out: (&mut [F], At)) {
    let (t, d) = (dims.t, dims.d);
    let (out, at_o) = out;
    let (starts, singles) = tiles(t);
    // All columns of a row tile before the next tile, so its rows of P stay in L1.
    macro_rules! row_tile {
        ($g:tt, $r0:expr, $n:expr) => {{
            let mut c0 = 0;
            while c0 + 16 <= d {
                mix_tile::<F, $g, 16>((p, t), m, ($r0, $n, c0), scale, (&mut *out, at_o));
                c0 += 16;
            }
            for c in c0..d {
                mix_tile::<F, $g, 1>((p, t), m, ($r0, $n, c), scale, (&mut *out, at_o));
            }
        }};
    }
    for r0 in starts {
        row_tile!(R, r0, dims.visible(r0 + R - 1));
    }
    for r0 in singles {
        row_tile!(1, r0, dims.visible(r0));
    }
}

/// Columns `c0..c0 + B` of `mix_t` on output rows `j0..j0 + G`, the sum over `i` from `i0`.
#[inline(never)] // compiled on its own, so that its vectorisation cannot depend on the caller
fn mix_t_tile<F: Float, const G: usize, const B: usize>(
    (p, t): (&[F], usize),
    (m, at_m): (&[F], At),
    (j0, i0, c0): (usize, usize, usize),
    scale: F,
    (out, at_o): (&mut [F], At),
) {
    let mut acc = [[F::zero(); B]; G];
    for i in i0..t {
        let mv: &[F; B] = m[at_m.row(i) + c0..at_m.row(i) + c0 + B].try_into().expect("a column block");
        let pi: &[F; G] = p[i * t + j0..i * t + j0 + G].try_into().expect("a tile's probabilities");
        for g in 0..G {
            for c in 0..B {
                acc[g][c] = pi[g].mul_add(mv[c], acc[g][c]);
            }
        }
    }
    for g in 0..G {
        let o = &mut out[at_o.row(j0 + g) + c0..at_o.row(j0 + g) + c0 + B];
        for c in 0..B {
            o[c] = acc[g][c] * scale;
        }
    }
}

/// `out[j, :] = scale · Σ_i p[i, j] m[i, :]` over the rows `i` that see `j` (`i ≥ j` under the
/// causal mask): `p` is `T x T`; the tiles run over columns in blocks of 16, then 1.
fn mix_t<F: Float>(p: &[F], m: (&[F], At), dims: Dims, scale: F, out: (&mut [F], At)) {
    let (t, d) = (dims.t, dims.d);
    let (out, at_o) = out;
    let first = |j: usize| if dims.causal { j } else { 0 };
    let (starts, singles) = tiles(t);
    // All columns of an output tile before the next tile, so its columns of P stay in L1.
    macro_rules! row_tile {
        ($g:tt, $j0:expr) => {{
            let mut c0 = 0;
            while c0 + 16 <= d {
                mix_t_tile::<F, $g, 16>((p, t), m, ($j0, first($j0), c0), scale, (&mut *out, at_o));
                c0 += 16;
            }
            for c in c0..d {
                mix_t_tile::<F, $g, 1>((p, t), m, ($j0, first($j0), c), scale, (&mut *out, at_o));
            }
        }};
    }
    for j0 in starts {
        row_tile!(R, j0);
    }
    for j0 in singles {
        row_tile!(1, j0);
    }
}

/// One head's forward: `p` (`T x T`) ← softmax(scale q·kᵀ) with the future masked to exactly
/// zero when `causal`, then the output rows at `o` ← P·v.
pub(crate) fn forward<F: Float>(
    [q, k, v]: [(&[F], At); 3],
    dims: Dims,
    scale: F,
    p: &mut [F],
    o: (&mut [F], At),
    sc: &mut Scratch<F>,
) {
    let (t, tp) = (dims.t, dims.tp());
    transpose_in(k.0, k.1, dims, &mut sc.bt);
    sc.s.resize(t * tp, F::zero());
    scores(q, &sc.bt, dims, scale, &mut sc.s);
    for (i, p_row) in p.chunks_exact_mut(t).enumerate() {
        let live = dims.visible(i);
        let s_row = &mut sc.s[i * tp..i * tp + live];
        softmax_row_in_place(s_row);
        p_row[..live].copy_from_slice(s_row);
        p_row[live..].fill(F::zero());
    }
    mix(p, v, dims, F::one(), o);
}

/// Where one head's three gradients go: each an index into the batch row's gradient buffers and
/// its place there (a packed qkv has one buffer for all three).
pub(crate) type GradsAt = [(usize, At); 3];

/// One head's backward from `d_o` (equations in the parent module); `p` is the forward's P. The
/// gradients overwrite their rows in `bufs`.
#[allow(clippy::too_many_arguments)] // a head's operands and results
pub(crate) fn backward<F: Float>(
    [q, k, v]: [(&[F], At); 3],
    p: &[F],
    d_o: (&[F], At),
    dims: Dims,
    scale: F,
    bufs: &mut [&mut [F]],
    [(iq, at_q), (ik, at_k), (iv, at_v)]: GradsAt,
    sc: &mut Scratch<F>,
) {
    let (t, tp) = (dims.t, dims.tp());
    // dV = Pᵀ·dO
    mix_t(p, d_o, dims, F::one(), (&mut *bufs[iv], at_v));
    // dP = dO·vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)), exactly zero where P is masked.
    transpose_in(v.0, v.1, dims, &mut sc.bt);
    sc.s.resize(t * tp, F::zero());
    scores(d_o, &sc.bt, dims, F::one(), &mut sc.s);
    sc.ds.resize(t * t, F::zero());
    for (i, ds_row) in sc.ds.chunks_exact_mut(t).enumerate() {
        let live = dims.visible(i);
        let (p_row, dp_row) = (&p[i * t..i * t + live], &sc.s[i * tp..i * tp + live]);
        let rowsum = dot(p_row, dp_row);
        for ((ds, &pj), &dpj) in ds_row.iter_mut().zip(p_row).zip(dp_row) {
            *ds = pj * (dpj - rowsum);
        }
        ds_row[live..].fill(F::zero());
    }
    // dQ = scale dS·k, dK = scale dSᵀ·q
    mix(&sc.ds, k, dims, scale, (&mut *bufs[iq], at_q));
    mix_t(&sc.ds, q, dims, scale, (&mut *bufs[ik], at_k));
}
