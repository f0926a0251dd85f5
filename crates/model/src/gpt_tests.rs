//! Tests of the model: initialisation, cached inference against the full forward, determinism.

use ndarray::{ArrayD, IxDyn};
use pglm_autograd::{Float, Tape};

use crate::{Gpt, GptConfig, InferScratch, KvCache};

fn tiny(vocab: usize, n_embd: usize) -> GptConfig {
    GptConfig::new(vocab, 16, 2, 2, n_embd)
}

fn ids(rows: &[&[u32]]) -> ArrayD<u32> {
    let t = rows[0].len();
    ArrayD::from_shape_vec(IxDyn(&[rows.len(), t]), rows.concat()).unwrap()
}

/// Full-forward logits of one sequence, (T, V) flattened.
fn full_logits<F: Float>(model: &Gpt<F>, seq: &[u32]) -> Vec<F> {
    let mut tape = Tape::no_grad();
    let hidden = model.forward(&mut tape, &ids(&[seq]), None).unwrap();
    let logits = model.logits(&mut tape, hidden);
    tape.value(logits).iter().copied().collect()
}

#[test]
fn same_seed_same_weights_and_hf_names() {
    let a = Gpt::<f32>::new(tiny(11, 8), 7).unwrap();
    let b = Gpt::<f32>::new(tiny(11, 8), 7).unwrap();
    let c = Gpt::<f32>::new(tiny(11, 8), 8).unwrap();
    for ((_, pa), ((_, pb), (_, pc))) in a.params.iter().zip(b.params.iter().zip(c.params.iter())) {
        assert_eq!(pa.value(), pb.value(), "{}", pa.name);
        if pa.value().len() > 8 && pa.name.ends_with("weight") && !pa.name.contains("ln") {
            assert_ne!(pa.value(), pc.value(), "{}", pa.name);
        }
    }
    for name in ["wte.weight", "wpe.weight", "h.1.attn.c_attn.weight", "h.0.mlp.c_proj.bias", "ln_f.bias"] {
        assert!(a.params.id(name).is_some(), "missing {name}");
    }
    let w = a.params.value(a.params.id("h.0.attn.c_attn.weight").unwrap());
    assert_eq!(w.shape(), &[8, 24], "Conv1D layout (in, out)");
}

#[test]
fn cached_decoding_matches_the_full_forward() {
    // n_embd 48: 3C = 144 columns exercises full and partial column blocks of the decode kernel.
    let model = Gpt::<f32>::new(tiny(13, 48), 3).unwrap();
    let seq: Vec<u32> = vec![1, 5, 2, 9, 12, 0, 7, 7, 3, 4];
    let full = full_logits(&model, &seq);
    let v = 13;
    let mut cache = KvCache::new(model.config(), 2, 16);
    let mut scratch = InferScratch::new(model.config(), 16);
    // Prefill four tokens in one call, then decode one token per call.
    let mut logits = vec![0.0f32; 4 * v];
    let rows: Vec<(usize, u32)> = seq[..4].iter().map(|&t| (1, t)).collect();
    model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits).unwrap();
    let mut got = logits.clone();
    for &t in &seq[4..] {
        let mut row = vec![0.0f32; v];
        model.forward_cached(&mut cache, &mut scratch, &[(1, t)], &mut row).unwrap();
        got.extend_from_slice(&row);
    }
    assert_eq!(cache.len(1), seq.len());
    for (i, (a, b)) in got.iter().zip(&full).enumerate() {
        assert!((a - b).abs() <= 1e-5, "position {}, token {}: cached {a}, full {b}", i / v, i % v);
    }
}

#[test]
fn long_cached_decoding_matches_the_full_forward_and_copies_of_its_slot() {
    // A cache of 90 positions (stored as 96) and an 85-token sequence: the attention scores run
    // in two blocks of 64, the second over the blocks of 16 keys the sequence reaches (see
    // `infer::attention`), and a copied slot carries on alike.
    let model = Gpt::<f32>::new(GptConfig::new(11, 96, 1, 2, 32), 6).unwrap();
    let v = 11;
    let seq: Vec<u32> = (0..85u32).map(|i| (i * 7 + 3) % 11).collect();
    let full = full_logits(&model, &seq);
    let mut cache = KvCache::new(model.config(), 2, 90);
    let mut scratch = InferScratch::new(model.config(), 8);
    let mut row = vec![0.0f32; v];
    let mut got = Vec::new();
    for &t in &seq[..78] {
        model.forward_cached(&mut cache, &mut scratch, &[(0, t)], &mut row).unwrap();
        got.extend_from_slice(&row);
    }
    cache.copy_slot(0, 1);
    let mut two = vec![0.0f32; 2 * v];
    for &t in &seq[78..] {
        model.forward_cached(&mut cache, &mut scratch, &[(0, t), (1, t)], &mut two).unwrap();
        assert_eq!(two[..v], two[v..], "the copied slot differs from its source");
        got.extend_from_slice(&two[..v]);
    }
    for (i, (a, b)) in got.iter().zip(&full).enumerate() {
        assert!((a - b).abs() <= 1e-5, "position {}, token {}: cached {a}, full {b}", i / v, i % v);
    }
}

#[test]
fn cached_logits_do_not_depend_on_the_batch() {
    let model = Gpt::<f32>::new(tiny(13, 48), 4).unwrap();
    let v = 13;
    let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4, 5], &[6]];
    // Alone: each prompt in its own cache.
    let mut alone = Vec::new();
    for p in prompts {
        let mut cache = KvCache::new(model.config(), 1, 16);
        let mut scratch = InferScratch::new(model.config(), 16);
        let rows: Vec<(usize, u32)> = p.iter().map(|&t| (0, t)).collect();
        let mut logits = vec![0.0f32; rows.len() * v];
        model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits).unwrap();
        alone.push(logits[(rows.len() - 1) * v..].to_vec());
    }
    // Together: all prompts prefilled in one call, slots in reverse order.
    let mut cache = KvCache::new(model.config(), 3, 16);
    let mut scratch = InferScratch::new(model.config(), 16);
    let mut rows = Vec::new();
    for (s, p) in prompts.iter().enumerate().rev() {
        rows.extend(p.iter().map(|&t| (s, t)));
    }
    let mut logits = vec![0.0f32; rows.len() * v];
    model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits).unwrap();
    let mut r = 0;
    for s in (0..3).rev() {
        r += prompts[s].len();
        assert_eq!(&logits[(r - 1) * v..r * v], &alone[s][..], "slot {s}: bits differ with the batch");
    }
}

#[test]
fn splitting_a_call_by_rows_or_by_columns_gives_the_same_bits() {
    // 6 slots x 8 prompt tokens, then one decode row per slot: the prefill (48 rows) and the
    // decode call (with 2 and 3 threads) split by rows when the slots ascend, by columns when they
    // do not (the same rows in reverse slot order), and not at all on one thread.
    let model = Gpt::<f32>::new(tiny(13, 48), 9).unwrap();
    let v = 13;
    let prompt = |s: usize| -> Vec<u32> { (0..8).map(|i| ((s * 5 + i * 3) % 13) as u32).collect() };
    let run = |threads: usize, reverse: bool| -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cache = KvCache::new(model.config(), 6, 16);
            let mut scratch = InferScratch::new(model.config(), 48);
            let mut order: Vec<usize> = (0..6).collect();
            if reverse {
                order.reverse();
            }
            let rows: Vec<(usize, u32)> =
                order.iter().flat_map(|&s| prompt(s).into_iter().map(move |t| (s, t))).collect();
            let mut logits = vec![0.0f32; rows.len() * v];
            model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits).unwrap();
            let decode: Vec<(usize, u32)> = order.iter().map(|&s| (s, (s % 13) as u32)).collect();
            let mut next = vec![0.0f32; decode.len() * v];
            model.forward_cached(&mut cache, &mut scratch, &decode, &mut next).unwrap();
            // In slot order, whatever order the rows came in.
            let mut out = vec![0.0f32; 6 * 9 * v];
            for (i, &s) in order.iter().enumerate() {
                out[s * 9 * v..(s * 9 + 8) * v].copy_from_slice(&logits[i * 8 * v..(i + 1) * 8 * v]);
                out[(s * 9 + 8) * v..(s + 1) * 9 * v].copy_from_slice(&next[i * v..(i + 1) * v]);
            }
            out
        })
    };
    let serial = run(1, false);
    for (threads, reverse) in [(2, false), (3, false), (2, true), (1, true)] {
        assert_eq!(run(threads, reverse), serial, "{threads} threads, reverse {reverse}: bits differ");
    }
}

#[test]
fn a_run_of_one_slot_in_one_call_has_the_bits_of_one_row_at_a_time() {
    // On one thread, a call's run of one slot's consecutive positions (what scoring a completion
    // sends) goes through the tiled attention; a call of one row through the per-row kernel.
    // Every row must match bit for bit. Head sizes 64, 32 and 24 cover the tiles' kinds of
    // columns; after two rows alone, the run's tiles of four rows straddle 32 and 64 keys, where
    // they must fall back to rows.
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for (n_head, n_embd) in [(1, 64), (2, 64), (2, 48)] {
        let model = Gpt::<f32>::new(GptConfig::new(11, 80, 1, n_head, n_embd), 7).unwrap();
        let v = 11;
        let seq: Vec<u32> = (0..70u32).map(|i| (i * 5 + 2) % 11).collect();
        let rows: Vec<(usize, u32)> = seq.iter().map(|&t| (0, t)).collect();
        let mut scratch = InferScratch::new(model.config(), 70);
        let mut all = vec![0.0f32; 70 * v];
        one_thread.install(|| {
            let mut cache = KvCache::new(model.config(), 1, 80);
            for (r, out) in rows[..2].iter().zip(all.chunks_exact_mut(v)) {
                model.forward_cached(&mut cache, &mut scratch, &[*r], out).unwrap();
            }
            model.forward_cached(&mut cache, &mut scratch, &rows[2..], &mut all[2 * v..]).unwrap();
        });
        let mut cache = KvCache::new(model.config(), 1, 80);
        let mut one = vec![0.0f32; v];
        for (i, &row) in rows.iter().enumerate() {
            model.forward_cached(&mut cache, &mut scratch, &[row], &mut one).unwrap();
            assert_eq!(&all[i * v..(i + 1) * v], &one[..], "head size {}, position {i}", n_embd / n_head);
        }
    }
}

#[test]
fn copy_slot_shares_a_prefill() {
    let model = Gpt::<f64>::new(tiny(9, 16), 5).unwrap();
    let v = 9;
    let mut cache = KvCache::new(model.config(), 2, 16);
    let mut scratch = InferScratch::new(model.config(), 8);
    let mut logits = vec![0.0; 3 * v];
    model.forward_cached(&mut cache, &mut scratch, &[(0, 1), (0, 2), (0, 3)], &mut logits).unwrap();
    cache.copy_slot(0, 1);
    let mut two = vec![0.0; 2 * v];
    model.forward_cached(&mut cache, &mut scratch, &[(0, 4), (1, 4)], &mut two).unwrap();
    assert_eq!(two[..v], two[v..]);
}

#[test]
fn bad_inputs_are_errors() {
    let model = Gpt::<f32>::new(tiny(9, 8), 5).unwrap();
    let mut tape = Tape::new();
    assert!(matches!(
        model.forward(&mut tape, &ids(&[&[1, 9]]), None),
        Err(crate::ModelError::TokenOutOfRange { id: 9, .. })
    ));
    let long = vec![0u32; 17];
    assert!(matches!(
        model.forward(&mut tape, &ids(&[&long]), None),
        Err(crate::ModelError::ContextTooLong { length: 17, .. })
    ));
    let mut cfg = tiny(9, 8);
    cfg.n_head = 3;
    assert!(Gpt::<f32>::new(cfg, 0).is_err());
    let mut cache = KvCache::new(model.config(), 1, 2);
    let mut scratch = InferScratch::new(model.config(), 4);
    let mut logits = vec![0.0; 3 * 9];
    assert!(matches!(
        model.forward_cached(&mut cache, &mut scratch, &[(0, 1), (0, 1), (0, 1)], &mut logits),
        Err(crate::ModelError::CacheFull { .. })
    ));
}

/// `steps` AdamW steps on one fixed batch; returns the loss of every step.
fn train_fixed_batch(model: &mut Gpt<f32>, steps: usize, lr: f64) -> Vec<f32> {
    use pglm_autograd::optim::{AdamW, Optimizer};
    let seqs: [&[u32]; 2] =
        [&[1, 4, 2, 8, 5, 7, 1, 0, 3, 9, 6, 2, 4], &[3, 3, 10, 2, 6, 1, 8, 8, 0, 5, 9, 7, 1]];
    let inputs: Vec<&[u32]> = seqs.iter().map(|s| &s[..12]).collect();
    let targets: Vec<&[u32]> = seqs.iter().map(|s| &s[1..]).collect();
    let (x, y) = (ids(&inputs), ids(&targets));
    let mut opt = AdamW::new(lr).with_weight_decay(0.0);
    let mut tape = Tape::new();
    let mut losses = Vec::new();
    for step in 0..steps {
        tape.clear();
        model.params.zero_grad();
        let loss = model.loss(&mut tape, &x, &y, None, Some(1000 + step as u64)).unwrap();
        losses.push(tape.value(loss).iter().copied().next().unwrap());
        tape.backward(loss).accumulate_into(&mut model.params);
        tape.clear();
        opt.step(&mut model.params, lr);
    }
    losses
}

#[test]
fn overfits_one_batch() {
    let mut model = Gpt::<f32>::new(tiny(11, 32), 1).unwrap();
    let losses = train_fixed_batch(&mut model, 150, 1e-2);
    let last = *losses.last().unwrap();
    assert!(losses[0] > 2.0, "initial loss {} should be near ln(11)", losses[0]);
    assert!(last < 0.05, "loss after 150 steps: {last}");
}

#[test]
fn training_is_bit_identical_with_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cfg = tiny(11, 64);
            cfg.dropout = 0.1;
            let mut model = Gpt::<f32>::new(cfg, 9).unwrap();
            let losses = train_fixed_batch(&mut model, 4, 1e-3);
            let weights: Vec<u32> = model
                .params
                .iter()
                .flat_map(|(_, p)| p.value().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect();
            (losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(), weights)
        })
    };
    assert_eq!(run(1), run(2));
}
