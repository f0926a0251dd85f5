"""Checks the export direction of pglm's Hugging Face GPT-2 interop: a directory written by
`Gpt::save_hf_dir` must load in `transformers` (`GPT2LMHeadModel.from_pretrained`) and give the
logits pglm computed for the same inputs.

usage: python scripts/check_hf_export.py DIR [--tol 1e-4]

DIR holds `config.json` and `model.safetensors` (the export) and `pglm_logits.json`
(`{"input_ids": [[...]], "logits": [[[...]]]}`), as written by the ignored test
`PGLM_HF_EXPORT_DIR=DIR cargo test -p pglm-model --lib hf -- --ignored`.
Needs torch and transformers. Prints the largest absolute logit difference; exits 1 above --tol.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    want = json.loads((args.dir / "pglm_logits.json").read_text())
    ids = torch.tensor(want["input_ids"], dtype=torch.long)
    pglm_logits = torch.tensor(want["logits"], dtype=torch.float64)

    model = GPT2LMHeadModel.from_pretrained(args.dir, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        hf_logits = model(ids).logits.to(torch.float64)

    if hf_logits.shape != pglm_logits.shape:
        print(f"shape mismatch: transformers {tuple(hf_logits.shape)}, pglm {tuple(pglm_logits.shape)}")
        return 1
    # The tied head must really be tied (one tensor), as pglm's is.
    tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    diff = (hf_logits - pglm_logits).abs().max().item()
    print(f"logits {tuple(hf_logits.shape)}: max |transformers - pglm| = {diff:.3e} (tol {args.tol:g}); "
          f"lm_head tied: {tied}")
    return 0 if diff <= args.tol and tied else 1


if __name__ == "__main__":
    sys.exit(main())
