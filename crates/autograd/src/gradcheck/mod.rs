//! Finite-difference gradient checks, driven by proptest.
//!
//! For an operation `y = op(x_1, ..., x_n)` and a random weight tensor `w` of `y`'s shape, the
//! scalar `L = sum(w * y)` has the gradient `dL/dx_i = J_i^T w`, which backward computes from the
//! seed `w` ([`crate::Tape::backward_with`]). The check compares it with central differences
//!
//! ```text
//! dL/dx[j] ~ (L(x + h e_j) - L(x - h e_j)) / (2h)
//! ```
//!
//! evaluated in f64, and fails on `|a - n| > atol + rtol * max(|a|, |n|)`. The f32 run differentiates
//! the same op in f32 and compares with the f64 differences, at looser tolerances.
//!
//! Every op module registers its cases in [`all_cases`]; the crate's tests and `cargo xtask gradcheck`
//! run the same registry.

use std::sync::Arc;

use ndarray::ArrayD;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::{Float, Tape, Var};

/// One drawn test case: the differentiable inputs and whatever else the op needs.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Differentiable inputs, in f64.
    pub inputs: Vec<ArrayD<f64>>,
    /// Non-differentiable integer data: axes, token ids, targets, sizes, seeds.
    pub ints: Vec<usize>,
    /// Non-differentiable flags: masks, keepdim, ...
    pub flags: Vec<bool>,
    /// Weights `w` of `L = sum(w * y)`; drawn by the harness when empty.
    pub seed_weights: u64,
}

impl Sample {
    /// A sample with only differentiable inputs.
    pub fn new(inputs: Vec<ArrayD<f64>>) -> Self {
        Sample { inputs, ints: Vec::new(), flags: Vec::new(), seed_weights: 0 }
    }
}

/// Builds the op under test on a tape from the input vars (generic so one function serves f32 and f64).
pub type Build<F> = fn(&mut Tape<F>, &[Var], &Sample) -> Var;

/// A named op check: how to draw samples and how to build the op in each precision.
#[derive(Clone)]
pub struct Case {
    /// The op's name in the report table.
    pub name: &'static str,
    /// Draws samples (shapes, values, extra data). Keep kinks out of the drawn values.
    pub strategy: Arc<dyn Fn() -> BoxedStrategy<Sample> + Send + Sync>,
    /// The op in f64.
    pub build64: Build<f64>,
    /// The op in f32.
    pub build32: Build<f32>,
    /// Relative tolerance in f64 (absolute is `rtol * 1e-1`).
    pub rtol64: f64,
    /// Relative tolerance in f32.
    pub rtol32: f64,
}

/// Registers a case from one generic build function: `case!("exp", strategy_fn, build_fn)`.
#[macro_export]
macro_rules! gradcheck_case {
    ($name:expr, $strategy:expr, $build:ident) => {
        $crate::gradcheck::Case {
            name: $name,
            strategy: ::std::sync::Arc::new($strategy),
            build64: $build::<f64>,
            build32: $build::<f32>,
            rtol64: 1e-6,
            rtol32: 1e-2,
        }
    };
}

/// The outcome of running one case.
#[derive(Clone, Debug)]
pub struct Report {
    /// The op's name.
    pub name: &'static str,
    /// Samples checked.
    pub cases: u32,
    /// Worst `|a - n| / (atol/rtol + max(|a|, |n|))` in f64 (the tolerance is `rtol` on this scale).
    pub worst64: f64,
    /// The same in f32 against the f64 differences.
    pub worst32: f64,
    /// The failure message of the first failing sample (after shrinking), if any.
    pub failure: Option<String>,
}

/// The relative error reported for one gradient entry: `|a - n| / (floor + max(|a|, |n|))`.
/// The floor keeps near-zero gradients from dividing by zero; a check passes when it is `<= rtol`.
fn rel_err(a: f64, n: f64, floor: f64) -> f64 {
    (a - n).abs() / (floor + a.abs().max(n.abs()))
}

/// Deterministic weights for `L = sum(w * y)`: values in [-1, 1] from a splitmix64 stream.
fn weights(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    ArrayD::from_shape_fn(shape, |_| {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    })
}

fn cast<F: Float>(a: &ArrayD<f64>) -> ArrayD<F> {
    a.mapv(F::of)
}

/// Runs the op forward and backward in precision `F`; returns `L` and the analytic gradients (in f64).
fn analytic<F: Float>(build: Build<F>, s: &Sample, w: &ArrayD<f64>) -> Vec<ArrayD<f64>> {
    let mut tape = Tape::<F>::new();
    let vars: Vec<Var> = s.inputs.iter().map(|x| tape.input(cast(x))).collect();
    let y = build(&mut tape, &vars, s);
    assert_eq!(tape.shape(y), w.shape(), "gradcheck: weight shape mismatch");
    let grads = tape.backward_with(y, cast(w));
    vars.iter()
        .map(|&v| match grads.wrt(v) {
            Some(g) => g.mapv(|x| x.to_f64()),
            None => ArrayD::zeros(tape.shape(v)),
        })
        .collect()
}

/// `L(x) = sum(w * op(x))` in f64, with no gradient recorded.
fn loss64(build: Build<f64>, s: &Sample, inputs: &[ArrayD<f64>], w: &ArrayD<f64>) -> f64 {
    let mut tape = Tape::<f64>::no_grad();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.constant(x.clone())).collect();
    let y = build(&mut tape, &vars, s);
    (tape.value(y) * w).sum()
}

/// Central differences of `L` with respect to every input element.
fn numeric(build: Build<f64>, s: &Sample, w: &ArrayD<f64>) -> Vec<ArrayD<f64>> {
    let h = 1e-5;
    let mut inputs = s.inputs.clone();
    let mut out = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        let mut g = ArrayD::zeros(inputs[i].raw_dim());
        for j in 0..inputs[i].len() {
            let x0 = inputs[i].as_slice_mut().expect("gradcheck inputs are contiguous")[j];
            inputs[i].as_slice_mut().unwrap()[j] = x0 + h;
            let lp = loss64(build, s, &inputs, w);
            inputs[i].as_slice_mut().unwrap()[j] = x0 - h;
            let lm = loss64(build, s, &inputs, w);
            inputs[i].as_slice_mut().unwrap()[j] = x0;
            g.as_slice_mut().unwrap()[j] = (lp - lm) / (2.0 * h);
        }
        out.push(g);
    }
    out
}

/// Worst relative error of `analytic` against `numeric`; `Err` names the first entry out of tolerance.
fn compare(a: &[ArrayD<f64>], n: &[ArrayD<f64>], rtol: f64) -> Result<f64, String> {
    let floor = 0.1; // atol = rtol * floor
    let mut worst = 0.0f64;
    for (i, (ai, ni)) in a.iter().zip(n).enumerate() {
        for (j, (&x, &y)) in ai.iter().zip(ni.iter()).enumerate() {
            let e = rel_err(x, y, floor);
            if e.is_nan() || e > rtol {
                return Err(format!(
                    "input {i}, element {j}: analytic {x:e}, numeric {y:e}, relative error {e:e} > {rtol:e}"
                ));
            }
            worst = worst.max(e);
        }
    }
    Ok(worst)
}

/// Checks one sample in f64 and f32; returns the worst errors `(f64, f32)`.
pub fn check_sample(case: &Case, s: &Sample) -> Result<(f64, f64), String> {
    let w64 = {
        let mut tape = Tape::<f64>::no_grad();
        let vars: Vec<Var> = s.inputs.iter().map(|x| tape.constant(x.clone())).collect();
        let y = (case.build64)(&mut tape, &vars, s);
        weights(tape.shape(y), s.seed_weights)
    };
    let n = numeric(case.build64, s, &w64);
    let a64 = analytic(case.build64, s, &w64);
    let e64 = compare(&a64, &n, case.rtol64).map_err(|e| format!("f64: {e}"))?;
    let a32 = analytic(case.build32, s, &w64);
    let e32 = compare(&a32, &n, case.rtol32).map_err(|e| format!("f32: {e}"))?;
    Ok((e64, e32))
}

/// Runs `cases` drawn samples of one op (proptest shrinks a failure to a small example).
pub fn run_case(case: &Case, cases: u32) -> Report {
    let mut config = Config::with_cases(cases);
    config.failure_persistence = None;
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let worst = std::cell::Cell::new((0.0f64, 0.0f64));
    let result = runner.run(&(case.strategy)(), |s| {
        let (e64, e32) = check_sample(case, &s).map_err(TestCaseError::fail)?;
        let (w64, w32) = worst.get();
        worst.set((w64.max(e64), w32.max(e32)));
        Ok(())
    });
    let (worst64, worst32) = worst.get();
    Report { name: case.name, cases, worst64, worst32, failure: result.err().map(|e| e.to_string()) }
}

/// Every registered case, op modules first, then composites.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(crate::ops::elementwise::gradcheck_cases());
    cases.extend(crate::ops::reduce::gradcheck_cases());
    cases.extend(crate::ops::shape::gradcheck_cases());
    cases.extend(crate::ops::linalg::gradcheck_cases());
    cases.extend(crate::ops::nn::gradcheck_cases());
    cases.extend(crate::ops::attention::gradcheck_cases());
    cases.extend(composite_cases());
    cases
}

/// Whole graphs rather than single ops: a two-layer MLP whose weight `W` is used by both layers,
/// so backward must add the two contributions, `y = gelu(tanh(x·W + b1)·W + b2)`, then the mean
/// cross-entropy of `y` against drawn targets.
fn composite_cases() -> Vec<Case> {
    fn mlp<F: Float>(t: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
        let (x, w, b1, b2) = (xs[0], xs[1], xs[2], xs[3]);
        let h = t.linear(x, w, Some(b1));
        let h = t.tanh(h);
        let y = t.linear(h, w, Some(b2));
        let y = t.gelu(y);
        let n = t.shape(y)[0];
        let d = t.shape(y)[1];
        let targets = ArrayD::from_shape_fn(vec![n], |i| (s.ints[i[0]] % d) as u32);
        t.cross_entropy(y, &targets, None)
    }
    fn strategy() -> BoxedStrategy<Sample> {
        (1usize..=4, 1usize..=4)
            .prop_flat_map(|(n, d)| {
                (
                    array(vec![n, d], -1.0, 1.0),
                    array(vec![d, d], -1.0, 1.0),
                    array(vec![d], -0.5, 0.5),
                    array(vec![d], -0.5, 0.5),
                    prop::collection::vec(0usize..16, n),
                    any::<u64>(),
                )
            })
            .prop_map(|(x, w, b1, b2, ints, seed)| Sample {
                ints,
                seed_weights: seed,
                ..Sample::new(vec![x, w, b1, b2])
            })
            .boxed()
    }
    vec![crate::gradcheck_case!("mlp, weight shared by 2 layers", strategy, mlp)]
}

/// Strategy helper: an f64 array of `shape` with values in `lo..hi`.
pub fn array(shape: Vec<usize>, lo: f64, hi: f64) -> BoxedStrategy<ArrayD<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..hi, n)
        .prop_map(move |v| ArrayD::from_shape_vec(shape.clone(), v).expect("length matches shape"))
        .boxed()
}

/// Strategy helper: a shape of rank `1..=max_rank` with each size in `1..=max_size`.
pub fn shape(max_rank: usize, max_size: usize) -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(1..=max_size, 1..=max_rank).boxed()
}

/// Formats reports as the table `cargo xtask gradcheck` prints.
pub fn table(reports: &[Report]) -> String {
    let mut s =
        format!("{:<32} {:>6} {:>12} {:>12}  {}\n", "op", "cases", "worst f64", "worst f32", "status");
    for r in reports {
        let status = match &r.failure {
            None => "ok".to_string(),
            Some(f) => format!("FAILED: {}", f.lines().next().unwrap_or("")),
        };
        s +=
            &format!("{:<32} {:>6} {:>12.3e} {:>12.3e}  {}\n", r.name, r.cases, r.worst64, r.worst32, status);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered op passes its gradient check (`PGLM_GRADCHECK_CASES` sets the count).
    #[test]
    fn all_ops_pass_gradcheck() {
        let n = std::env::var("PGLM_GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
        let reports: Vec<Report> = all_cases().iter().map(|c| run_case(c, n)).collect();
        let failed: Vec<&Report> = reports.iter().filter(|r| r.failure.is_some()).collect();
        assert!(failed.is_empty(), "gradient checks failed:\n{}", table(&reports));
    }

    /// The harness itself catches a wrong gradient: an op whose backward is deliberately off.
    #[test]
    fn harness_rejects_a_wrong_gradient() {
        // exp's true gradient is exp(x); compare analytic exp against numeric of exp(1.001 x).
        fn exp_build<F: Float>(t: &mut Tape<F>, xs: &[Var], _: &Sample) -> Var {
            t.exp(xs[0])
        }
        let s = Sample::new(vec![ArrayD::from_shape_vec(vec![3], vec![0.1, 0.5, -0.3]).unwrap()]);
        let w = weights(&[3], 1);
        let a = analytic::<f64>(exp_build::<f64>, &s, &w);
        let mut bad = a.clone();
        bad[0][[1]] *= 1.001;
        let n = numeric(exp_build::<f64>, &s, &w);
        assert!(compare(&a, &n, 1e-6).is_ok());
        assert!(compare(&bad, &n, 1e-6).is_err());
    }
}
