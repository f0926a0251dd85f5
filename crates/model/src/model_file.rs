//! Saving and loading a model (config, weights, tokenizer) in pglm's checkpoint container.

use std::path::Path;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::tokenizer::Tokenizer;
use crate::{Gpt, GptConfig, ModelError};

/// The container kind of a saved model.
pub const MODEL_KIND: &str = "pglm.model";

/// What a model file holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedModel {
    /// The architecture.
    pub config: GptConfig,
    /// The tokenizer the model was trained with, if any.
    pub tokenizer: Option<Tokenizer>,
    /// Every parameter by name, in the model's order.
    pub params: Vec<(String, ArrayD<f32>)>,
}

impl SavedModel {
    /// A snapshot of `model` (and its tokenizer).
    pub fn of(model: &Gpt<f32>, tokenizer: Option<&Tokenizer>) -> Self {
        SavedModel {
            config: model.config().clone(),
            tokenizer: tokenizer.cloned(),
            params: model.params.iter().map(|(_, p)| (p.name.clone(), p.value().clone())).collect(),
        }
    }

    /// Rebuilds the model, checking every parameter's name and shape against the config.
    pub fn into_model(self) -> Result<(Gpt<f32>, Option<Tokenizer>), ModelError> {
        let mut model = Gpt::<f32>::new(self.config, 0)?;
        if self.params.len() != model.params.len() {
            return Err(ModelError::ParamMismatch {
                name: "(count)".into(),
                expected: vec![model.params.len()],
                got: vec![self.params.len()],
            });
        }
        for (i, (name, value)) in self.params.into_iter().enumerate() {
            let id = pglm_autograd::ParamId(i);
            let p = model.params.get_mut(id);
            if p.name != name || p.value().shape() != value.shape() {
                return Err(ModelError::ParamMismatch {
                    name: format!("{name} (expected {})", p.name),
                    expected: p.value().shape().to_vec(),
                    got: value.shape().to_vec(),
                });
            }
            *p.value_mut() = value;
        }
        Ok((model, self.tokenizer))
    }
}

impl Gpt<f32> {
    /// Writes the model (and tokenizer) to `path` atomically, with a format version and checksum.
    pub fn save(&self, path: impl AsRef<Path>, tokenizer: Option<&Tokenizer>) -> Result<(), ModelError> {
        checkpoint::save(path, MODEL_KIND, &SavedModel::of(self, tokenizer))?;
        Ok(())
    }

    /// Loads a model saved by [`Gpt::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<(Self, Option<Tokenizer>), ModelError> {
        let saved: SavedModel = checkpoint::load(path, MODEL_KIND)?;
        saved.into_model()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_and_detect_corruption() {
        let model = Gpt::<f32>::new(GptConfig::new(7, 8, 1, 2, 8), 2).unwrap();
        let dir = std::env::temp_dir().join(format!("pglm-model-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.ckpt");
        model.save(&path, None).unwrap();
        let (back, tok) = Gpt::load(&path).unwrap();
        assert!(tok.is_none());
        for ((_, a), (_, b)) in model.params.iter().zip(back.params.iter()) {
            assert_eq!(a.value(), b.value());
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Gpt::load(&path), Err(ModelError::Checkpoint(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
