#!/usr/bin/env bash
# Multi-GPU smoke check: toy shards -> a few pretraining steps with DDP and with FSDP (NCCL, bf16).
# Usage (on a machine with >= 2 GPUs, repo root, package importable): bash bench/multi_gpu_smoke.sh [WORKDIR]
set -euo pipefail
work="${1:-/tmp/maestro-multigpu}"
gpus="$(python3 -c 'import torch; print(torch.cuda.device_count())')"
rm -rf "$work" && mkdir -p "$work"
python3 -m shards.cli toy --out "$work/flairhub" --patches 40
python3 -m shards.cli build --root "$work/flairhub" --split train val --out "$work/shards" --max-count 4 --workers 8 --no-progress
for strategy in ddp fsdp; do
  python3 -m pretrain.cli --config configs/pretrain/toy.yaml --accelerator gpu --devices "$gpus" --strategy "$strategy" \
    --output-dir "$work/run-$strategy" data.train="$work/shards" data.val="$work/shards" data.batch_size=4 \
    data.num_workers=2 data.batches_per_epoch=6 trainer.max_epochs=2 trainer.log_every_n_steps=1 \
    trainer.reconstruction_every_n_steps=5 trainer.checkpoint_every_n_steps=4
  python3 - "$work/run-$strategy" <<'PY'
import csv, glob, math, sys
rows = [r for f in sorted(glob.glob(sys.argv[1] + "/csv/version_*/metrics.csv")) for r in csv.DictReader(open(f))]
train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
ckpts = sorted(p.rsplit("/", 1)[-1] for p in glob.glob(sys.argv[1] + "/checkpoints/*.ckpt"))
assert train and all(math.isfinite(x) for x in train + val), (train, val)
print(f"{sys.argv[1]}: {len(train)} logged steps, loss {train[0]:.4f} -> {train[-1]:.4f}, val {val}, checkpoints {ckpts}")
PY
done
