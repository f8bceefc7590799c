#!/usr/bin/env bash
# The main job on the built-in example: toy FLAIR-HUB -> verified shards -> MAESTRO pretraining ->
# fine-tuning for land cover and for crop type (LPIS level 2), each tested with a per-class table.
# Usage: bash examples/run_toy.sh [OUT_DIR]   (default: example/; refuses to overwrite it)
set -euo pipefail
out="${1:-example}"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "run_toy.sh: $out already exists and is not empty; remove it or pass another directory" >&2
  exit 1
fi
configs="$(dirname "$0")/../configs"

shards toy --out "$out/flairhub" --patches 200 --seed 0
shards build --root "$out/flairhub" --split train val test --out "$out/shards" --max-count 32 --workers 2
shards verify "$out/shards"
shards stats "$out/shards" --split train
pretrain --config "$configs/pretrain/toy.yaml" \
  data.train="$out/shards" data.val="$out/shards" trainer.output_dir="$out/runs/pretrain"
for task in "--task lc" "--task lpis --level 2"; do
  name="$(echo "$task" | tr -d ' -' | sed 's/task//; s/level/-level/')"
  finetune $task --config "$configs/finetune/toy.yaml" --init "$out/runs/pretrain" \
    data.train="$out/shards" data.val="$out/shards" data.test="$out/shards" \
    trainer.output_dir="$out/runs/finetune/$name"
done

echo "done: pretraining in $out/runs/pretrain; fine-tuning runs, scores and figures in $out/runs/finetune/*/test"
