//! The GPT-2 decoder for training: every op on the autograd tape.
//!
//! ```text
//! x = wte[ids] + wpe[0..T]
//! for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
//! logits = ln_f(x) · wteᵀ            (the LM head is tied to the token embedding)
//! ```
//!
//! Linear weights are stored `(in, out)` as in GPT-2's `Conv1D`, so `y = x · W + b` needs no
//! transpose and Hugging Face checkpoints load as they are.

use ndarray::ArrayD;
use pglm_autograd::{Float, ParamId, ParamStore, Tape, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::{GptConfig, ModelError};

/// The parameter ids of one transformer block.
#[derive(Clone, Debug)]
pub(crate) struct BlockIds {
    pub ln_1: (ParamId, Option<ParamId>),
    pub c_attn: (ParamId, Option<ParamId>),
    pub attn_proj: (ParamId, Option<ParamId>),
    pub ln_2: (ParamId, Option<ParamId>),
    pub c_fc: (ParamId, Option<ParamId>),
    pub mlp_proj: (ParamId, Option<ParamId>),
}

/// The parameter ids of the whole model.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    pub wte: ParamId,
    pub wpe: ParamId,
    pub blocks: Vec<BlockIds>,
    pub ln_f: (ParamId, Option<ParamId>),
    pub value_head: Option<(ParamId, ParamId)>,
}

/// A GPT-2-style language model: its config and its parameters, addressable by Hugging Face names.
pub struct Gpt<F: Float> {
    config: GptConfig,
    /// The weights, named as in Hugging Face GPT-2 (`wte.weight`, `h.0.attn.c_attn.weight`, ...).
    pub params: ParamStore<F>,
    pub(crate) ids: Ids,
}

/// What [`Gpt::forward`] leaves on the tape.
#[derive(Clone, Copy, Debug)]
pub struct Hidden {
    /// The final hidden states after `ln_f`, shape (B, T, C).
    pub h: Var,
    /// The token embedding as bound on this tape (the tied LM head reuses it).
    pub wte: Var,
    /// The value head's weight and bias as bound on this tape, when the model has one.
    pub value_head: Option<(Var, Var)>,
}

/// A deterministic 64-bit hash of a name (FNV-1a), to give each parameter its own RNG stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl<F: Float> Gpt<F> {
    /// A freshly initialised model, as GPT-2 initialises one: weights ~ N(0, 0.02), the two residual
    /// projections of each block ~ N(0, 0.02 / sqrt(2 n_layer)), biases 0, layer norms (1, 0).
    /// Each parameter draws from its own stream seeded by `seed` and its name: same seed, same weights.
    pub fn new(config: GptConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let c = config.n_embd;
        let std = 0.02;
        let proj_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let mut params = ParamStore::new();
        let normal = |params: &mut ParamStore<F>, name: String, shape: &[usize], std: f64| {
            let mut rng = StdRng::seed_from_u64(seed ^ name_hash(&name));
            let dist = Normal::new(0.0, std).expect("a positive standard deviation");
            let value = ArrayD::from_shape_simple_fn(shape, || F::of(dist.sample(&mut rng)));
            params.add(name, value)
        };
        let bias = config.bias;
        let fill = |params: &mut ParamStore<F>, name: String, n: usize, v: f64| {
            params.add(name, ArrayD::from_elem(vec![n], F::of(v)))
        };
        let layer_norm = |params: &mut ParamStore<F>, prefix: &str| {
            let w = fill(params, format!("{prefix}.weight"), c, 1.0);
            let b = bias.then(|| fill(params, format!("{prefix}.bias"), c, 0.0));
            (w, b)
        };
        let linear = |params: &mut ParamStore<F>, prefix: &str, n_in: usize, n_out: usize, std: f64| {
            let w = normal(params, format!("{prefix}.weight"), &[n_in, n_out], std);
            let b = bias.then(|| fill(params, format!("{prefix}.bias"), n_out, 0.0));
            (w, b)
        };
        let wte = normal(&mut params, "wte.weight".into(), &[config.vocab_size, c], std);
        let wpe = normal(&mut params, "wpe.weight".into(), &[config.context_length, c], std);
        let blocks = (0..config.n_layer)
            .map(|i| BlockIds {
                ln_1: layer_norm(&mut params, &format!("h.{i}.ln_1")),
                c_attn: linear(&mut params, &format!("h.{i}.attn.c_attn"), c, 3 * c, std),
                attn_proj: linear(&mut params, &format!("h.{i}.attn.c_proj"), c, c, proj_std),
                ln_2: layer_norm(&mut params, &format!("h.{i}.ln_2")),
                c_fc: linear(&mut params, &format!("h.{i}.mlp.c_fc"), c, 4 * c, std),
                mlp_proj: linear(&mut params, &format!("h.{i}.mlp.c_proj"), 4 * c, c, proj_std),
            })
            .collect();
        let ln_f = layer_norm(&mut params, "ln_f");
        let value_head = config.value_head.then(|| {
            let w = normal(&mut params, "value_head.weight".into(), &[c, 1], std);
            let b = fill(&mut params, "value_head.bias".into(), 1, 0.0);
            (w, b)
        });
        let ids = Ids { wte, wpe, blocks, ln_f, value_head };
        Ok(Gpt { config, params, ids })
    }

    /// The model's config.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Checks a batch of token ids: rank 2 (B, T), 1 <= T <= context, every id < vocab.
    pub fn check_ids(&self, ids: &ArrayD<u32>) -> Result<(), ModelError> {
        if ids.ndim() != 2 || ids.shape()[1] == 0 {
            return Err(ModelError::BadBatch { shape: ids.shape().to_vec() });
        }
        self.check_tokens(ids.shape()[1], ids.iter())
    }

    /// The checks every forward makes of its tokens: sequences of `t` positions fit the context,
    /// and every id is in the vocabulary.
    pub(crate) fn check_tokens<'a>(
        &self,
        t: usize,
        mut ids: impl Iterator<Item = &'a u32>,
    ) -> Result<(), ModelError> {
        if t > self.config.context_length {
            return Err(ModelError::ContextTooLong { length: t, context_length: self.config.context_length });
        }
        if let Some(&id) = ids.find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::TokenOutOfRange { id, vocab_size: self.config.vocab_size });
        }
        Ok(())
    }

    /// Binds every parameter to `tape` (in store order: element `i` is `ParamId(i)`).
    pub fn bind(&self, tape: &mut Tape<F>) -> Vec<Var> {
        self.params.iter().map(|(id, _)| tape.param(&self.params, id)).collect()
    }

    /// The transformer body: token ids (B, T) to final hidden states (B, T, C), on `tape`.
    /// `dropout_seed` turns dropout on (training) with masks drawn from that seed; `None` is eval.
    pub fn forward(
        &self,
        tape: &mut Tape<F>,
        ids: &ArrayD<u32>,
        dropout_seed: Option<u64>,
    ) -> Result<Hidden, ModelError> {
        let params = self.bind(tape);
        self.forward_with(tape, &params, ids, dropout_seed)
    }

    /// [`Gpt::forward`] with the parameters already on the tape as `params` (from [`Gpt::bind`], or
    /// any vars of the same shapes: the whole-model gradient check differentiates through them).
    pub fn forward_with(
        &self,
        tape: &mut Tape<F>,
        params: &[Var],
        ids: &ArrayD<u32>,
        dropout_seed: Option<u64>,
    ) -> Result<Hidden, ModelError> {
        self.check_ids(ids)?;
        assert_eq!(params.len(), self.params.len(), "forward_with: one var per parameter");
        let t = ids.shape()[1];
        let p = |id: ParamId| params[id.0];
        let opt = |id: Option<ParamId>| id.map(|id| params[id.0]);
        let eps = self.config.layer_norm_epsilon;
        let drop_p = self.config.dropout;
        // Each dropout site gets its own seed so that masks never repeat across sites.
        let mut site = 0u64;
        let mut dropout = |tape: &mut Tape<F>, x: Var| match dropout_seed {
            Some(seed) if drop_p > 0.0 => {
                site += 1;
                tape.dropout(x, drop_p, seed.wrapping_add(site.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            }
            _ => x,
        };

        let wte = p(self.ids.wte);
        let tok = tape.embedding(wte, ids); // (B, T, C)
        let pos = tape.narrow(p(self.ids.wpe), 0, 0, t); // (T, C), broadcast over B
        let x0 = tape.add(tok, pos);
        let mut x = dropout(tape, x0);
        let n_head = self.config.n_head;
        for block in &self.ids.blocks {
            x = self.block(
                tape,
                params,
                block,
                x,
                &mut |tape, qkv| tape.causal_self_attention(qkv, n_head),
                &mut dropout,
            );
        }
        let h = self.layer_norm(tape, x, p(self.ids.ln_f.0), opt(self.ids.ln_f.1), eps);
        let value_head = self.ids.value_head.map(|(w, b)| (p(w), p(b)));
        Ok(Hidden { h, wte, value_head })
    }

    /// One pre-LayerNorm block on rows `x` (`(..., C)`): `x + attn(ln_1(x))`, then
    /// `x + mlp(ln_2(x))`. `attend` maps the rows' packed `qkv` (`(..., 3C)`) to their attention
    /// outputs (`(..., C)`); `dropout` is applied after each residual branch.
    pub(crate) fn block(
        &self,
        tape: &mut Tape<F>,
        params: &[Var],
        block: &BlockIds,
        x: Var,
        attend: &mut dyn FnMut(&mut Tape<F>, Var) -> Var,
        dropout: &mut dyn FnMut(&mut Tape<F>, Var) -> Var,
    ) -> Var {
        let p = |id: ParamId| params[id.0];
        let opt = |id: Option<ParamId>| id.map(|id| params[id.0]);
        let eps = self.config.layer_norm_epsilon;
        let h = self.layer_norm(tape, x, p(block.ln_1.0), opt(block.ln_1.1), eps);
        let qkv = tape.linear(h, p(block.c_attn.0), opt(block.c_attn.1)); // (..., 3C)
        let a = attend(tape, qkv); // (..., C)
        let a = tape.linear(a, p(block.attn_proj.0), opt(block.attn_proj.1));
        let a = dropout(tape, a);
        let x = tape.add(x, a);

        let h = self.layer_norm(tape, x, p(block.ln_2.0), opt(block.ln_2.1), eps);
        let h = tape.linear(h, p(block.c_fc.0), opt(block.c_fc.1)); // (..., 4C)
        let h = tape.gelu(h);
        let m = tape.linear(h, p(block.mlp_proj.0), opt(block.mlp_proj.1));
        let m = dropout(tape, m);
        tape.add(x, m)
    }

    pub(crate) fn layer_norm(&self, tape: &mut Tape<F>, x: Var, w: Var, b: Option<Var>, eps: f64) -> Var {
        let b = match b {
            Some(b) => b,
            None => tape.constant(ArrayD::zeros(vec![self.config.n_embd])),
        };
        tape.layer_norm(x, w, b, eps)
    }

    /// The tied LM head: logits = h · wteᵀ, shape (B, T, V). `matmul_t` reads `wte` (V, C)
    /// through a transposed view, so the embedding is never copied.
    pub fn logits(&self, tape: &mut Tape<F>, hidden: Hidden) -> Var {
        tape.matmul_t(hidden.h, hidden.wte)
    }

    /// The scalar value head on the final hidden states: shape (B, T).
    ///
    /// # Errors
    /// [`ModelError::NoValueHead`] when the config has no value head.
    pub fn values(&self, tape: &mut Tape<F>, hidden: Hidden) -> Result<Var, ModelError> {
        let (w, b) = hidden.value_head.ok_or(ModelError::NoValueHead)?;
        let v = tape.linear(hidden.h, w, Some(b)); // (B, T, 1)
        let shape = tape.shape(v)[..2].to_vec();
        Ok(tape.reshape(v, &shape))
    }

    /// Mean next-token cross-entropy of the logits at each position against `targets` (B, T),
    /// counting only positions where `mask` (B, T) is non-zero (all positions when `None`).
    pub fn loss(
        &self,
        tape: &mut Tape<F>,
        ids: &ArrayD<u32>,
        targets: &ArrayD<u32>,
        mask: Option<&ArrayD<F>>,
        dropout_seed: Option<u64>,
    ) -> Result<Var, ModelError> {
        self.check_targets(ids, targets, mask)?;
        let hidden = self.forward(tape, ids, dropout_seed)?;
        let logits = self.logits(tape, hidden);
        Ok(tape.cross_entropy(logits, targets, mask))
    }

    /// log π(targets[b, t] | ids[b, ..=t]) for every position, shape (B, T), divided by
    /// `temperature` first (log-softmax of logits / temperature, the sampler's convention).
    pub fn token_log_probs(
        &self,
        tape: &mut Tape<F>,
        ids: &ArrayD<u32>,
        targets: &ArrayD<u32>,
        temperature: f64,
    ) -> Result<Var, ModelError> {
        self.check_targets(ids, targets, None)?;
        let hidden = self.forward(tape, ids, None)?;
        let mut logits = self.logits(tape, hidden);
        if temperature != 1.0 {
            logits = tape.mul_scalar(logits, 1.0 / temperature);
        }
        Ok(tape.token_log_probs(logits, targets))
    }

    fn check_targets(
        &self,
        ids: &ArrayD<u32>,
        targets: &ArrayD<u32>,
        mask: Option<&ArrayD<F>>,
    ) -> Result<(), ModelError> {
        if targets.shape() != ids.shape() {
            return Err(ModelError::ShapeMismatch {
                what: "targets",
                expected: ids.shape().to_vec(),
                got: targets.shape().to_vec(),
            });
        }
        if let Some(&id) = targets.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::TokenOutOfRange { id, vocab_size: self.config.vocab_size });
        }
        if let Some(m) = mask
            && m.shape() != ids.shape()
        {
            return Err(ModelError::ShapeMismatch {
                what: "loss mask",
                expected: ids.shape().to_vec(),
                got: m.shape().to_vec(),
            });
        }
        Ok(())
    }
}
