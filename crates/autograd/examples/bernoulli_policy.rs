//! A binary classifier trained as a policy, with the policy gradient: the smallest REINFORCE.
//!
//! ```sh
//! cargo run --release -p pglm-autograd --example bernoulli_policy -- --optimizer adam
//! cargo run --release -p pglm-autograd --example bernoulli_policy -- --optimizer sgd --lr 0.5
//! ```
//!
//! The policy sees a point `x` and takes an action `a ∈ {0, 1}` with
//!
//! ```text
//! π_θ(a = 1 | x) = σ(θ·x + b)        (a Bernoulli policy; σ is the logistic sigmoid)
//! ```
//!
//! and the environment pays reward `r = 1` when `a` equals the point's label, else `0`. The labels
//! come from a hidden hyperplane, so the data is linearly separable and a perfect policy exists.
//!
//! # How it relates to REINFORCE
//!
//! REINFORCE (Williams, 1992) maximises the expected reward `J(θ) = E_{a∼π_θ}[r(x, a)]` with the
//! score-function identity `∇J = E[(r − β) ∇ log π_θ(a|x)]`, where any baseline `β` that does not
//! depend on `a` leaves the expectation unchanged and lowers its variance. Each step here:
//!
//! 1. *rolls out*: samples one action per training point from the current policy;
//! 2. *scores*: `r_i = 1[a_i = y_i]`; the baseline is the batch's mean reward, `β = mean(r)`
//!    (the same "group mean" baseline GRPO uses for the completions of one prompt);
//! 3. *updates*: builds the surrogate loss `L = −mean_i (r_i − β) log π_θ(a_i | x_i)` on the tape,
//!    whose gradient is minus the REINFORCE estimate, and takes an SGD or Adam step.
//!
//! The reward never needs to be differentiable: the gradient flows only through `log π`. That is
//! exactly how pglm fine-tunes a language model, where the "action" is a whole completion and
//! `log π` is the sum of its tokens' log-probabilities. Unlike supervised learning (cross-entropy
//! on the labels), the policy is never told the right answer; it only learns which of its own
//! actions paid off. Accuracy is measured greedily (`a = 1` iff `π(1|x) > ½`) and printed every
//! 100 steps until it reaches `--target` or the step budget runs out.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::optim::{Adam, Optimizer, Sgd};
use pglm_autograd::{ParamStore, Tape};

/// Which optimizer updates θ and b.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// Adam (Kingma & Ba), PyTorch's defaults.
    Adam,
}

/// The settings of one run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Feature dimension of the points.
    pub dim: usize,
    /// Training points.
    pub points: usize,
    /// SGD or Adam.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Step budget.
    pub max_steps: u64,
    /// Stop once the greedy accuracy reaches this.
    pub target: f64,
    /// Seed of the data and of the sampled actions.
    pub seed: u64,
    /// Print the accuracy every 100 steps.
    pub verbose: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dim: 8,
            points: 256,
            optimizer: OptimizerKind::Adam,
            lr: 0.05,
            max_steps: 5000,
            target: 1.0,
            seed: 7,
            verbose: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Steps taken.
    pub steps: u64,
    /// Greedy accuracy on the training points at the end.
    pub accuracy: f64,
}

/// A splitmix64 stream: enough randomness for an example, with no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Points `x ~ N(0, I)` labelled by a hidden hyperplane `y = 1[w*·x > 0]`, keeping only points at
/// least 0.1 from it (a margin, so that a perfect classifier is reachable in few steps).
fn make_data(dim: usize, points: usize, rng: &mut Rng) -> (ArrayD<f64>, Vec<bool>) {
    let w: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut xs = Vec::with_capacity(points * dim);
    let mut ys = Vec::with_capacity(points);
    while ys.len() < points {
        let x: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        let margin = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / norm;
        if margin.abs() >= 0.1 {
            xs.extend(x);
            ys.push(margin > 0.0);
        }
    }
    (ArrayD::from_shape_vec(IxDyn(&[points, dim]), xs).expect("points × dim values"), ys)
}

/// The logits `z = x·θ + b` (shape `[points, 1]`) of the current parameters, without the tape.
fn logits(store: &ParamStore<f64>, x: &ArrayD<f64>) -> Vec<f64> {
    let mut tape = Tape::no_grad();
    let xv = tape.constant(x.clone());
    let (theta, bias) =
        (tape.param(store, pglm_autograd::ParamId(0)), tape.param(store, pglm_autograd::ParamId(1)));
    let xt = tape.matmul(xv, theta);
    let z = tape.add(xt, bias);
    tape.value(z).iter().copied().collect()
}

/// Greedy accuracy: the fraction of points where `π(1|x) > ½` (that is `z > 0`) matches the label.
fn accuracy(store: &ParamStore<f64>, x: &ArrayD<f64>, y: &[bool]) -> f64 {
    let z = logits(store, x);
    z.iter().zip(y).filter(|(z, y)| (**z > 0.0) == **y).count() as f64 / y.len() as f64
}

/// Trains the Bernoulli policy by REINFORCE until the accuracy reaches `s.target` or the budget
/// runs out.
pub fn train(s: &Settings) -> Outcome {
    let mut rng = Rng(s.seed);
    let (x, y) = make_data(s.dim, s.points, &mut rng);
    let mut store = ParamStore::<f64>::new();
    let theta = store.add("theta", ArrayD::zeros(IxDyn(&[s.dim, 1])));
    let bias = store.add("bias", ArrayD::zeros(IxDyn(&[1])));
    let mut sgd = Sgd::<f64>::new(s.lr);
    let mut adam = Adam::<f64>::new(s.lr);
    let n = s.points;

    let mut step = 0;
    let mut acc = accuracy(&store, &x, &y);
    while step < s.max_steps && acc < s.target {
        // 1. Roll out: a_i ~ Bernoulli(σ(z_i)).
        let z = logits(&store, &x);
        let actions: Vec<bool> = z.iter().map(|&z| rng.uniform() < 1.0 / (1.0 + (-z).exp())).collect();
        // 2. Score, and the group-mean baseline β.
        let rewards: Vec<f64> = actions.iter().zip(&y).map(|(a, y)| f64::from(u8::from(a == y))).collect();
        let baseline = rewards.iter().sum::<f64>() / n as f64;
        // Per point: (r_i − β) at the taken action's column, 0 at the other. Then
        // Σ_j adv_ij log_softmax([0, z_i])_j = (r_i − β) log π(a_i|x_i), because
        // log_softmax([0, z]) = (log(1 − σ(z)), log σ(z)), finite for any z.
        let mut weights = ArrayD::<f64>::zeros(IxDyn(&[n, 2]));
        for (i, (&a, &r)) in actions.iter().zip(&rewards).enumerate() {
            weights[[i, usize::from(a)]] = r - baseline;
        }

        // 3. The surrogate L = −(1/n) Σ_i (r_i − β) log π(a_i|x_i); ∇L = −(REINFORCE estimate).
        let mut tape = Tape::new();
        let xv = tape.constant(x.clone());
        let (tv, bv) = (tape.param(&store, theta), tape.param(&store, bias));
        let xt = tape.matmul(xv, tv);
        let zv = tape.add(xt, bv);
        let zero = tape.constant(ArrayD::zeros(IxDyn(&[n, 1])));
        let both = tape.concat(&[zero, zv], 1);
        let logp = tape.log_softmax(both);
        let w = tape.constant(weights);
        let weighted = tape.mul(logp, w);
        let objective = tape.mean_all(weighted);
        // mean over n·2 entries, of which n are non-zero: rescale to the mean over points.
        let loss = tape.mul_scalar(objective, -2.0);
        store.zero_grad();
        tape.backward(loss).accumulate_into(&mut store);
        tape.clear();
        match s.optimizer {
            OptimizerKind::Sgd => sgd.step(&mut store, s.lr),
            OptimizerKind::Adam => adam.step(&mut store, s.lr),
        }
        step += 1;
        acc = accuracy(&store, &x, &y);
        if s.verbose && (step % 100 == 0 || acc >= s.target) {
            println!("step {step:>5}  mean reward {baseline:.3}  accuracy {acc:.3}");
        }
    }
    Outcome { steps: step, accuracy: acc }
}

fn parse_args() -> Result<Settings, String> {
    let mut s = Settings { verbose: true, ..Settings::default() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number =
            |v: String| v.parse::<f64>().map_err(|_| format!("{flag}: expected a number, got {v:?}"));
        match flag.as_str() {
            "--optimizer" => {
                s.optimizer = match value()?.as_str() {
                    "sgd" => OptimizerKind::Sgd,
                    "adam" => OptimizerKind::Adam,
                    other => return Err(format!("--optimizer: expected sgd or adam, got {other:?}")),
                }
            }
            "--lr" => s.lr = number(value()?)?,
            "--steps" => s.max_steps = number(value()?)? as u64,
            "--target" => s.target = number(value()?)?,
            "--dim" => s.dim = number(value()?)? as usize,
            "--points" => s.points = number(value()?)? as usize,
            "--seed" => s.seed = number(value()?)? as u64,
            "--help" | "-h" => {
                return Err(
                    "usage: bernoulli_policy [--optimizer sgd|adam] [--lr X] [--steps N] [--target ACC] \
                            [--dim D] [--points N] [--seed S]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if s.optimizer == OptimizerKind::Sgd && !std::env::args().any(|a| a == "--lr") {
        s.lr = 0.5; // plain SGD needs a larger step than Adam's normalised one
    }
    Ok(s)
}

fn main() {
    let settings = match parse_args() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    println!(
        "REINFORCE on a Bernoulli policy: {} points in {} dimensions, {:?}, lr {}",
        settings.points, settings.dim, settings.optimizer, settings.lr
    );
    let out = train(&settings);
    let verdict = if out.accuracy >= settings.target { "reached the target" } else { "budget spent" };
    println!("{verdict} after {} steps: accuracy {:.3}", out.steps, out.accuracy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_optimizers_reach_perfect_accuracy() {
        for (optimizer, lr) in [(OptimizerKind::Adam, 0.05), (OptimizerKind::Sgd, 0.5)] {
            let s = Settings { optimizer, lr, ..Settings::default() };
            let out = train(&s);
            assert_eq!(out.accuracy, 1.0, "{optimizer:?}: {out:?}");
            assert!(out.steps > 0 && out.steps < s.max_steps, "{optimizer:?}: {out:?}");
        }
    }

    #[test]
    fn the_untrained_policy_is_at_chance() {
        // θ = 0, b = 0: z = 0 everywhere, greedy predicts 0; accuracy is the share of label 0.
        let s = Settings { max_steps: 0, ..Settings::default() };
        let out = train(&s);
        assert!(out.accuracy > 0.2 && out.accuracy < 0.8, "{out:?}");
    }
}
