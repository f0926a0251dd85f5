//! The tiny GPT-2 fixture (written by scripts/make_gpt2_fixture.py through Hugging Face
//! `save_pretrained`) reads back with the Hugging Face key names and Conv1D shapes that
//! the model loader expects.

use pglm_model::safetensors_io::read_safetensors;
use std::collections::BTreeMap;
use std::path::PathBuf;

const VOCAB: usize = 64;
const N_POSITIONS: usize = 16;
const N_EMBD: usize = 16;
const N_LAYER: usize = 2;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny")
}

/// Every parameter `GPT2LMHeadModel.save_pretrained` writes, with its shape. Conv1D
/// weights are (in, out); `lm_head.weight` is absent (tied to `wte`), and transformers 5
/// keeps the causal mask out of the state dict (no `attn.bias` buffers).
fn expected_shapes() -> BTreeMap<String, Vec<usize>> {
    let c = N_EMBD;
    let mut shapes = BTreeMap::new();
    let mut put = |name: &str, shape: &[usize]| shapes.insert(format!("transformer.{name}"), shape.to_vec());
    put("wte.weight", &[VOCAB, c]);
    put("wpe.weight", &[N_POSITIONS, c]);
    for i in 0..N_LAYER {
        put(&format!("h.{i}.ln_1.weight"), &[c]);
        put(&format!("h.{i}.ln_1.bias"), &[c]);
        put(&format!("h.{i}.attn.c_attn.weight"), &[c, 3 * c]);
        put(&format!("h.{i}.attn.c_attn.bias"), &[3 * c]);
        put(&format!("h.{i}.attn.c_proj.weight"), &[c, c]);
        put(&format!("h.{i}.attn.c_proj.bias"), &[c]);
        put(&format!("h.{i}.ln_2.weight"), &[c]);
        put(&format!("h.{i}.ln_2.bias"), &[c]);
        put(&format!("h.{i}.mlp.c_fc.weight"), &[c, 4 * c]);
        put(&format!("h.{i}.mlp.c_fc.bias"), &[4 * c]);
        put(&format!("h.{i}.mlp.c_proj.weight"), &[4 * c, c]);
        put(&format!("h.{i}.mlp.c_proj.bias"), &[c]);
    }
    put("ln_f.weight", &[c]);
    put("ln_f.bias", &[c]);
    shapes
}

#[test]
fn fixture_has_the_hugging_face_gpt2_layout() {
    let file = read_safetensors(fixture_dir().join("model.safetensors")).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> =
        file.tensors.iter().map(|(name, t)| (name.clone(), t.shape().to_vec())).collect();
    assert_eq!(shapes, expected_shapes());
    assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
}

#[test]
fn fixture_norms_and_biases_are_randomized() {
    // The fixture exists to catch swapped or skipped weights; default (1, 0) layer norms
    // and zero biases would hide both.
    let file = read_safetensors(fixture_dir().join("model.safetensors")).unwrap();
    for (name, tensor) in &file.tensors {
        assert!(tensor.iter().all(|x| x.is_finite()), "{name}");
        let mean_abs_dev =
            |centre: f32| tensor.iter().map(|x| (x - centre).abs()).sum::<f32>() / tensor.len() as f32;
        if name.contains(".ln_") && name.ends_with(".weight") {
            assert!(mean_abs_dev(1.0) > 0.05, "{name} looks like an untouched layer norm gain");
        } else {
            assert!(mean_abs_dev(0.0) > 0.05, "{name} looks like zeros");
        }
    }
}

#[test]
fn golden_inputs_fit_the_fixture_config() {
    // golden.json must stay consistent with the safetensors file it describes.
    let golden = std::fs::read_to_string(fixture_dir().join("golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&golden).unwrap();
    let ids = golden["input_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    for row in ids {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 12);
        assert!(row.iter().all(|id| id.as_u64().is_some_and(|id| (id as usize) < VOCAB)));
    }
    let logits = golden["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 2);
    assert!(logits.iter().all(|b| {
        let rows = b.as_array().unwrap();
        rows.len() == 12 && rows.iter().all(|r| r.as_array().unwrap().len() == VOCAB)
    }));
    let loss = golden["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
}
