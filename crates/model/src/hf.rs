//! Import and export of the Hugging Face GPT-2 layout: a directory with `config.json` and
//! `model.safetensors`.
//!
//! Hugging Face stores GPT-2's linear layers as `Conv1D` with weights `(in, out)`, exactly our
//! layout, so tensors are copied as they are. Keys may carry a `transformer.` prefix (what
//! `transformers` 5 writes) or not (the original `gpt2` files); the causal-mask buffers
//! `attn.bias` / `attn.masked_bias` are skipped and `lm_head.weight`, when present, must equal the
//! tied token embedding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use serde_json::{Value, json};

use crate::safetensors_io::{read_safetensors, write_safetensors};
use crate::{Gpt, GptConfig, ModelError};

fn hf_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Hf { path: path.to_path_buf(), message: message.into() }
}

/// Reads a GPT-2 `config.json` into our config, refusing the variants we do not implement.
pub fn read_hf_config(path: &Path) -> Result<GptConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| hf_err(path, format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| hf_err(path, format!("invalid JSON: {e}")))?;
    let int = |key: &str| -> Result<usize, ModelError> {
        v.get(key)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| hf_err(path, format!("field `{key}`: expected a non-negative integer")))
    };
    let (n_embd, n_layer, n_head) = (int("n_embd")?, int("n_layer")?, int("n_head")?);
    let mut config = GptConfig::new(int("vocab_size")?, int("n_positions")?, n_layer, n_head, n_embd);
    if let Some(eps) = v.get("layer_norm_epsilon") {
        config.layer_norm_epsilon =
            eps.as_f64().ok_or_else(|| hf_err(path, "field `layer_norm_epsilon`: expected a number"))?;
    }
    let act = v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(hf_err(
            path,
            format!("field `activation_function`: expected \"gelu_new\" (GELU, tanh form), got {act:?}"),
        ));
    }
    if let Some(inner) = v.get("n_inner").and_then(Value::as_u64)
        && inner as usize != 4 * n_embd
    {
        return Err(hf_err(path, format!("field `n_inner`: expected null or 4 * n_embd = {}", 4 * n_embd)));
    }
    for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"] {
        if v.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(hf_err(path, format!("field `{flag}`: true is not supported")));
        }
    }
    if v.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
        return Err(hf_err(path, "field `scale_attn_weights`: false is not supported"));
    }
    if v.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        return Err(hf_err(path, "field `tie_word_embeddings`: an untied LM head is not supported"));
    }
    config.validate()?;
    Ok(config)
}

impl Gpt<f32> {
    /// Loads a Hugging Face GPT-2 directory (`config.json` + `model.safetensors`).
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = read_hf_config(&dir.join("config.json"))?;
        let weights_path = dir.join("model.safetensors");
        let file = read_safetensors(&weights_path)?;
        let mut tensors: BTreeMap<String, ArrayD<f32>> = BTreeMap::new();
        for (key, value) in file.tensors {
            let name = key.strip_prefix("transformer.").unwrap_or(&key).to_string();
            if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
                continue; // causal-mask buffers, not parameters
            }
            tensors.insert(name, value);
        }
        let lm_head = tensors.remove("lm_head.weight");
        let mut model = Gpt::<f32>::new(config, 0)?;
        let names: Vec<String> = model.params.iter().map(|(_, p)| p.name.clone()).collect();
        for name in &names {
            let value = tensors
                .remove(name)
                .ok_or_else(|| hf_err(&weights_path, format!("missing tensor `{name}`")))?;
            let id = model.params.id(name).expect("name from the store");
            let expected = model.params.value(id).shape().to_vec();
            if value.shape() != expected.as_slice() {
                return Err(hf_err(
                    &weights_path,
                    format!("tensor `{name}` has shape {:?}, expected {expected:?}", value.shape()),
                ));
            }
            *model.params.get_mut(id).value_mut() = value;
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(hf_err(&weights_path, format!("unexpected tensor `{extra}` (not part of GPT-2)")));
        }
        if let Some(head) = lm_head
            && head != model.params.value(model.ids.wte)
        {
            return Err(hf_err(&weights_path, "lm_head.weight differs from wte.weight: an untied head"));
        }
        Ok(model)
    }

    /// Writes the model as a Hugging Face GPT-2 directory that `GPT2LMHeadModel.from_pretrained` loads.
    pub fn save_hf_dir(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| hf_err(dir, format!("cannot create directory: {e}")))?;
        if self.ids.value_head.is_some() {
            return Err(hf_err(dir, "a model with a value head has no GPT-2 equivalent"));
        }
        if !self.config().bias {
            return Err(hf_err(dir, "GPT-2 has biases; this model was built without them"));
        }
        let c = self.config();
        let config = json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": "gelu_new",
            "vocab_size": c.vocab_size,
            "n_positions": c.context_length,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": null,
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "resid_pdrop": c.dropout,
            "embd_pdrop": c.dropout,
            "attn_pdrop": 0.0,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "initializer_range": 0.02,
        });
        let config_path: PathBuf = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
        crate::checkpoint::write_atomically(&config_path, text.as_bytes())
            .map_err(|e| hf_err(&config_path, format!("cannot write: {e}")))?;
        let tensors: Vec<(String, ndarray::ArrayViewD<'_, f32>)> =
            self.params.iter().map(|(_, p)| (format!("transformer.{}", p.name), p.value().view())).collect();
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(dir.join("model.safetensors"), &tensors, &metadata)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pglm_autograd::Tape;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny")
    }

    #[test]
    fn imported_gpt2_gives_the_logits_of_transformers() {
        let model = Gpt::<f32>::from_hf_dir(fixture()).unwrap();
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap()).unwrap();
        let ids: Vec<u32> = golden["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32))
            .collect();
        let t = ids.len() / 2;
        let ids = ArrayD::from_shape_vec(vec![2, t], ids).unwrap();
        let mut tape = Tape::no_grad();
        let hidden = model.forward(&mut tape, &ids, None).unwrap();
        let logits = model.logits(&mut tape, hidden);
        let want: Vec<f64> = golden["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter()))
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = tape.value(logits);
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-4, "worst logit difference {worst}");

        // The next-token loss as transformers computes it (labels = inputs, shifted).
        let inputs = ids.slice(ndarray::s![.., ..t - 1]).to_owned().into_dyn();
        let targets = ids.slice(ndarray::s![.., 1..]).to_owned().into_dyn();
        let mut tape = Tape::no_grad();
        let loss = model.loss(&mut tape, &inputs, &targets, None, None).unwrap();
        let loss = tape.value(loss).iter().next().copied().unwrap() as f64;
        assert!((loss - golden["loss"].as_f64().unwrap()).abs() < 1e-5, "loss {loss}");
    }

    #[test]
    fn export_then_import_is_the_identity() {
        let model = Gpt::<f32>::new(GptConfig::new(11, 8, 2, 2, 8), 3).unwrap();
        let dir = std::env::temp_dir().join(format!("pglm-hf-export-{}", std::process::id()));
        model.save_hf_dir(&dir).unwrap();
        let back = Gpt::<f32>::from_hf_dir(&dir).unwrap();
        assert_eq!(back.config(), model.config());
        for ((_, a), (_, b)) in model.params.iter().zip(back.params.iter()) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.value(), b.value());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes what `scripts/check_hf_export.py` needs to prove the export direction against
    /// `transformers`: a random tiny model (every weight, bias and LayerNorm parameter drawn, so a
    /// misplaced or untransposed tensor shows) exported to `$PGLM_HF_EXPORT_DIR` (a temporary
    /// directory when unset), plus `pglm_logits.json` with the input ids and pglm's logits.
    /// Ignored by default (CI has no Python); run it with
    /// `PGLM_HF_EXPORT_DIR=DIR cargo test -p pglm-model --lib hf -- --ignored`, then
    /// `python scripts/check_hf_export.py DIR`.
    #[test]
    #[ignore = "writes a fixture for scripts/check_hf_export.py"]
    fn write_export_for_the_transformers_check() {
        use rand::{Rng, SeedableRng};
        let mut model = Gpt::<f32>::new(GptConfig::new(50, 16, 2, 2, 16), 11).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let ids: Vec<_> = model.params.iter().map(|(id, _)| id).collect();
        for id in ids {
            let p = model.params.get_mut(id);
            let is_ln_weight = p.name.contains("ln_") && p.name.ends_with(".weight");
            p.value_mut().mapv_inplace(|v| {
                let noise = rng.random_range(-0.1f32..0.1);
                if is_ln_weight { 1.0 + noise } else { v + noise }
            });
        }
        let dir = std::env::var_os("PGLM_HF_EXPORT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("pglm-hf-check-{}", std::process::id())));
        model.save_hf_dir(&dir).unwrap();
        let (b, t) = (2, 12);
        let input: Vec<u32> = (0..b * t).map(|i| ((i * 17 + 3) % 50) as u32).collect();
        let input = ArrayD::from_shape_vec(vec![b, t], input).unwrap();
        let mut tape = Tape::no_grad();
        let hidden = model.forward(&mut tape, &input, None).unwrap();
        let logits = model.logits(&mut tape, hidden);
        let logits = tape.value(logits).clone().into_dimensionality::<ndarray::Ix3>().unwrap();
        let rows = |b: usize| input.index_axis(ndarray::Axis(0), b).iter().copied().collect::<Vec<u32>>();
        let out = json!({
            "input_ids": (0..b).map(rows).collect::<Vec<_>>(),
            "logits": logits.outer_iter().map(|m| m.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        });
        std::fs::write(dir.join("pglm_logits.json"), out.to_string()).unwrap();
        assert!(dir.join("model.safetensors").is_file() && dir.join("config.json").is_file());
        eprintln!("wrote {}", dir.display());
    }

    #[test]
    fn unsupported_configs_are_named() {
        let dir = std::env::temp_dir().join(format!("pglm-hf-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, r#"{"vocab_size": 5, "n_positions": 4, "n_embd": 4, "n_layer": 1, "n_head": 2, "activation_function": "relu"}"#).unwrap();
        let err = read_hf_config(&path).unwrap_err().to_string();
        assert!(err.contains("activation_function") && err.contains("config.json"), "{err}");
        std::fs::write(&path, r#"{"vocab_size": 5}"#).unwrap();
        let err = read_hf_config(&path).unwrap_err().to_string();
        assert!(err.contains("n_embd"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
