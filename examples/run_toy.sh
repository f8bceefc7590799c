#!/usr/bin/env bash
# The main job on the built-in example: toy FLAIR-HUB -> verified shards -> MAESTRO pretraining.
# Usage: bash examples/run_toy.sh [OUT_DIR]   (default: example/; refuses to overwrite it)
set -euo pipefail
out="${1:-example}"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "run_toy.sh: $out already exists and is not empty; remove it or pass another directory" >&2
  exit 1
fi
config="$(dirname "$0")/../configs/pretrain/toy.yaml"

shards toy --out "$out/flairhub" --patches 200 --seed 0
shards build --root "$out/flairhub" --split train val test --out "$out/shards" --max-count 32 --workers 2
shards verify "$out/shards"
shards stats "$out/shards" --split train
pretrain --config "$config" \
  data.train="$out/shards" data.val="$out/shards" trainer.output_dir="$out/runs/pretrain"

echo "done: checkpoints, TensorBoard/CSV logs and reconstruction PNGs in $out/runs/pretrain"
