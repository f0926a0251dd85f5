//! The whole-model gradient check: every parameter of a tiny GPT against finite differences.
//!
//! Registered beside the ops' checks in `cargo xtask gradcheck`. The parameters are the inputs of
//! the check; token ids, targets and the loss mask are drawn with them.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::gradcheck::{Case, Sample, array};
use pglm_autograd::{Float, Tape, Var};
use proptest::prelude::*;

use crate::{Gpt, GptConfig};

const B: usize = 2;
const T: usize = 4;

fn config() -> GptConfig {
    GptConfig::new(7, 5, 2, 2, 4)
}

/// The masked next-token loss of the tiny model whose parameters are `xs`.
fn loss<F: Float>(tape: &mut Tape<F>, xs: &[Var], s: &Sample) -> Var {
    let model = Gpt::<F>::new(config(), 0).expect("valid config");
    let to_ids =
        |v: &[usize]| ArrayD::from_shape_vec(IxDyn(&[B, T]), v.iter().map(|&i| i as u32).collect()).unwrap();
    let ids = to_ids(&s.ints[..B * T]);
    let targets = to_ids(&s.ints[B * T..2 * B * T]);
    // At least one position counts, so the mean is defined.
    let mask = ArrayD::from_shape_fn(IxDyn(&[B, T]), |i| {
        let k = i[0] * T + i[1];
        if s.flags[k] || k == 0 { F::one() } else { F::zero() }
    });
    let hidden = model.forward_with(tape, xs, &ids, None).expect("valid ids");
    let logits = model.logits(tape, hidden);
    tape.cross_entropy(logits, &targets, Some(&mask))
}

fn strategy() -> BoxedStrategy<Sample> {
    let model = Gpt::<f64>::new(config(), 0).expect("valid config");
    let params: Vec<BoxedStrategy<ArrayD<f64>>> = model
        .params
        .iter()
        .map(|(_, p)| {
            // Layer-norm gains stay away from zero; everything else is drawn around it.
            let (lo, hi) =
                if p.name.contains("ln") && p.name.ends_with("weight") { (0.5, 1.5) } else { (-0.5, 0.5) };
            array(p.value().shape().to_vec(), lo, hi)
        })
        .collect();
    let vocab = config().vocab_size;
    (
        params,
        prop::collection::vec(0..vocab, 2 * B * T),
        prop::collection::vec(any::<bool>(), B * T),
        any::<u64>(),
    )
        .prop_map(|(inputs, ints, flags, seed)| Sample { inputs, ints, flags, seed_weights: seed })
        .boxed()
}

/// The registered whole-model case(s).
pub fn gradcheck_cases() -> Vec<Case> {
    vec![pglm_autograd::gradcheck_case!("gpt (whole model, masked loss)", strategy, loss)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_model_passes_gradcheck() {
        let n = std::env::var("PGLM_GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
        for case in super::gradcheck_cases() {
            let report = pglm_autograd::gradcheck::run_case(&case, n.min(16));
            assert!(report.failure.is_none(), "{}", pglm_autograd::gradcheck::table(&[report]));
        }
    }
}
