//! The model's hyper-parameters (GPT-2's `config.json` fields under nanoGPT's names).

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Shape and regularisation of a GPT-2-style decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Number of token ids (the embedding table's rows).
    pub vocab_size: usize,
    /// Longest sequence the position table covers (`n_positions` in Hugging Face).
    pub context_length: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Dropout probability on embeddings and residual branches (0 for RL fine-tuning).
    #[serde(default)]
    pub dropout: f64,
    /// Whether linear layers and layer norms have biases (GPT-2: true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// Layer-norm epsilon (GPT-2: 1e-5).
    #[serde(default = "ln_eps")]
    pub layer_norm_epsilon: f64,
    /// Adds a scalar value head on the final hidden states (PPO critics, reward models).
    #[serde(default)]
    pub value_head: bool,
}

fn yes() -> bool {
    true
}

fn ln_eps() -> f64 {
    1e-5
}

impl GptConfig {
    /// A config with GPT-2's defaults for everything but the sizes.
    pub fn new(
        vocab_size: usize,
        context_length: usize,
        n_layer: usize,
        n_head: usize,
        n_embd: usize,
    ) -> Self {
        GptConfig {
            vocab_size,
            context_length,
            n_layer,
            n_head,
            n_embd,
            dropout: 0.0,
            bias: true,
            layer_norm_epsilon: 1e-5,
            value_head: false,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks that the sizes make a model.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, expected: String| Err(ModelError::Config { field, expected });
        if self.vocab_size == 0 {
            return bad("vocab_size", "at least 1".into());
        }
        if self.context_length == 0 {
            return bad("context_length", "at least 1".into());
        }
        if self.n_layer == 0 {
            return bad("n_layer", "at least 1".into());
        }
        if self.n_head == 0 || self.n_embd == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return bad("n_head", format!("a divisor of n_embd = {}", self.n_embd));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("a probability in [0, 1), got {}", self.dropout));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return bad("layer_norm_epsilon", format!("a positive number, got {}", self.layer_norm_epsilon));
        }
        Ok(())
    }

    /// Parameters excluding the position table (the `N` of the FLOP formula `6 N` per token).
    pub fn non_embedding_params(&self) -> usize {
        let c = self.n_embd;
        let b = usize::from(self.bias);
        let per_layer = 2 * c * (1 + b) // two layer norms
            + c * 3 * c + 3 * c * b      // c_attn
            + c * c + c * b              // attn c_proj
            + c * 4 * c + 4 * c * b      // c_fc
            + 4 * c * c + c * b; // mlp c_proj
        self.vocab_size * c + self.n_layer * per_layer + c * (1 + b)
    }

    /// FLOPs of one training step on `tokens` tokens of context `t` (forward + backward), the
    /// nanoGPT/PaLM estimate: `6 N + 12 n_layer n_embd t` per token.
    pub fn train_flops_per_token(&self, t: usize) -> f64 {
        6.0 * self.non_embedding_params() as f64 + 12.0 * (self.n_layer * self.n_embd * t) as f64
    }
}
