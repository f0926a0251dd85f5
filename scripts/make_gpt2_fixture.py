#!/usr/bin/env python3
"""Write the tiny GPT-2 golden fixture used by pglm-model's tests.

Builds a small random Hugging Face `GPT2LMHeadModel`, saves it the way
`save_pretrained(..., safe_serialization=True)` does (config.json + model.safetensors),
and writes golden.json with reference logits and loss for two fixed input sequences.
The Rust side loads the same safetensors file and must reproduce these numbers, so
the import path (key names, Conv1D (in, out) layout, tied lm_head, gelu_new, layer
norm epsilon) is checked against the reference implementation without any network.

Run with any Python that has torch, transformers (5.x) and safetensors:

    python scripts/make_gpt2_fixture.py

The output is deterministic for a given torch/transformers version: all randomness
comes from fixed seeds, and the goldens are computed in float64 from the float32
weights (a float32 -> float64 cast is exact), so a Rust f64 forward pass can be held
to a tight tolerance and an f32 one to a looser one.
"""

import json
import os
import pathlib

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 1234
BATCH, SEQ_LEN = 2, 12
OUT_DIR = pathlib.Path(__file__).resolve().parent.parent / "crates/model/tests/fixtures/gpt2_tiny"


def tiny_config() -> GPT2Config:
    """GPT-2 architecture at toy size; dropouts off so the forward pass is deterministic."""
    vocab_size = 64
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # 10x the GPT-2 default, so the logits are O(1) and differ clearly between tokens.
        initializer_range=0.2,
        # The defaults (50256) would point outside this vocabulary.
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )


def randomize_norms_and_biases(model: GPT2LMHeadModel, generator: torch.Generator) -> None:
    """HF initialises layer norms to (1, 0) and biases to 0. A loader that swapped a weight
    with its bias, or skipped a bias, would then still match the reference, so give every
    one of them distinct random values."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
            elif ".ln_" in name and name.endswith(".weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=generator))


def golden(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> dict:
    """Logits (B, T, V) and the mean next-token cross-entropy with labels = inputs
    (HF shifts internally: position t predicts token t+1, B*(T-1) terms)."""
    reference = GPT2LMHeadModel(model.config).double().eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = reference(input_ids=input_ids, labels=input_ids)
    logits = out.logits
    assert logits.dtype == torch.float64
    # HF's ForCausalLMLoss upcasts logits to float32 only, so recompute the loss in float64:
    # L = mean over b, t < T-1 of -log softmax(logits[b, t])[input_ids[b, t+1]].
    vocab_size = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab_size), input_ids[:, 1:].reshape(-1)
    )
    assert abs(loss.item() - out.loss.item()) < 1e-5, (loss.item(), out.loss.item())
    return {
        "note": "float64 forward pass of the float32 weights in model.safetensors; "
        "loss = mean cross-entropy of predicting input_ids[:, t+1] from position t",
        "input_ids": input_ids.tolist(),
        "logits": logits.tolist(),
        "loss": loss.item(),
    }


def write_json(path: pathlib.Path, value: dict) -> None:
    """One logits row per line: readable diffs without a number per line. Python's float
    repr is the shortest string that round-trips, so no precision is lost."""
    lines = ["{"]
    lines.append(f'  "note": {json.dumps(value["note"])},')
    lines.append(f'  "input_ids": {json.dumps(value["input_ids"])},')
    lines.append('  "logits": [')
    for b, rows in enumerate(value["logits"]):
        lines.append("    [")
        for t, row in enumerate(rows):
            comma = "," if t + 1 < len(rows) else ""
            lines.append(f"      {json.dumps(row)}{comma}")
        lines.append("    ]" + ("," if b + 1 < len(value["logits"]) else ""))
    lines.append("  ],")
    lines.append(f'  "loss": {json.dumps(value["loss"])}')
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    assert json.loads(path.read_text()) == value


def main() -> None:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    config = tiny_config()
    # Eager attention: the plain softmax(QK^T / sqrt(hs) + causal mask) V that pglm implements.
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).float().eval()
    randomize_norms_and_biases(model, generator)
    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), generator=generator)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    # Only config.json and model.safetensors are part of the fixture.
    generation_config = OUT_DIR / "generation_config.json"
    if generation_config.exists():
        os.remove(generation_config)
    write_json(OUT_DIR / "golden.json", golden(model, input_ids))

    for path in sorted(OUT_DIR.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
