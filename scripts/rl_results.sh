#!/usr/bin/env bash
# Reproduces the RL tables of docs/RESULTS.md: addition (SFT briefly, then each algorithm at the
# same sample budget, three seeds) and countdown with 3 numbers (SFT on format only, then GRPO).
# Usage: scripts/rl_results.sh [OUT_DIR] [addition|countdown|all]
set -euo pipefail
out=${1:-runs/results}
which=${2:-all}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$root/Cargo.toml" -p xtask -p pglm-trainer --example sft --example rl
bin=${CARGO_TARGET_DIR:-$root/target}/release
seeds="1 2 3"

accuracy() { # the eval_accuracy values of a run, first and last
  grep -o '"eval_accuracy":[0-9.]*' "$1/metrics.jsonl" | sed 's/.*://' | sed -n '1p;$p' | paste -sd' '
}

if [ "$which" = all ] || [ "$which" = addition ]; then
  "$bin/xtask" data addition --n 20000 --test-n 500 --seed 1 --digits 2 --out "$out/data/addition" >/dev/null
  [ -d "$out/addition-sft" ] || "$bin/examples/sft" --data "$out/data/addition" --out "$out/addition-sft" \
    --steps 250 --layers 2 --width 128 --heads 4 --context 16 --batch 64 --lr 3e-3 \
    --eval-every 250 --holdout 512 --examples 500 >/dev/null
  for seed in $seeds; do
    # PPO three ways: one pass per batch like the others; 2 epochs x 2 mini-batches at a quarter
    # of the learning rate (the same step size per batch); and 2 x 2 at the full rate.
    for alg in reinforce rloo grpo dr_grpo ppo ppo-2x2 ppo-2x2-lr1e-4; do
      preset=${alg%%-*} lr=1e-4 extra=""
      case "$alg" in
        ppo-2x2) lr=2.5e-5 extra="--epochs 2 --mini-batches 2" ;;
        ppo-2x2-lr1e-4) extra="--epochs 2 --mini-batches 2" ;;
      esac
      run="$out/addition-$alg-s$seed"
      start=$(date +%s)
      "$bin/examples/rl" --data "$out/data/addition" --init "$out/addition-sft" --out "$run" \
        --preset "$preset" --steps 300 --lr "$lr" --max-new 5 --examples 500 --eval-every 50 \
        --seed "$seed" $extra >/dev/null
      echo "addition $alg seed $seed: accuracy $(accuracy "$run") wall $(( $(date +%s) - start ))s"
    done
  done
fi

if [ "$which" = all ] || [ "$which" = countdown ]; then
  "$bin/xtask" data countdown --numbers 3 --n 20000 --test-n 500 --seed 1 --format-sft \
    --out "$out/data/countdown" >/dev/null
  [ -d "$out/countdown-sft" ] || "$bin/examples/sft" --data "$out/data/countdown" --sft-file sft_format.jsonl \
    --out "$out/countdown-sft" --steps 1000 --layers 2 --width 128 --heads 4 --context 64 --batch 64 \
    --lr 3e-3 --eval-every 1000 --holdout 512 --examples 500 >/dev/null
  for seed in $seeds; do
    run="$out/countdown-grpo-s$seed"
    start=$(date +%s)
    "$bin/examples/rl" --data "$out/data/countdown" --init "$out/countdown-sft" --out "$run" \
      --preset grpo --steps 300 --lr 1e-4 --max-new 32 --examples 500 --eval-every 50 \
      --seed "$seed" >/dev/null
    echo "countdown grpo seed $seed: accuracy $(accuracy "$run") wall $(( $(date +%s) - start ))s"
  done
fi
