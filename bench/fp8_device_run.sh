#!/usr/bin/env bash
# FP8 against bf16 on one lent GPU (H100 80 GB or H200), in one call of under 10 minutes:
#
#   1. throughput: the medium MAE's synthetic training step (bench/pretrain_throughput.py) in bf16
#      and FP8, whole-model compiled then eager, at batch 256 where it fits (on a card under
#      120 GiB: 192, where bf16 peaks near 66 GiB; a batch that still does not fit is reported and
#      the largest that fits, halving, is timed instead), with peak memory;
#   2. numerics: bf16 and FP8 `pretrain` runs of the small model (compiled, same seed, same toy
#      shards, so the same batches and masks), one after the other, each alone on the GPU, for
#      NUMERICS_STEPS steps, with `trainer.fp8_min_features` lowered to the small encoder's width
#      so that its blocks convert; the loss of both in one CSV and each run's median step time;
#      the FP8 run's checkpoint loaded into a plain bf16 encoder (the key sets compared); once both
#      runs are complete, a token-level linear probe (finetune/linear_probe.py) of both encoders.
#
# Run from the repository root, `bash bench/fp8_device_run.sh`, on a GPU machine where wheels of
# the packages its image lacks (webdataset, rasterio, segmentation-models-pytorch, pystac, torchao
# 0.18.0) lie in .whl/; they are installed into /tmp/site first. Everything lands in $OUT (6 files):
# pretrain_throughput_compiled.json, pretrain_throughput_eager.json, numerics_loss.csv,
# fp8_numerics.png (bench/fp8_numerics_plot.py), summary.md and fp8_device_run.log.
#
# Expected on an H100 or H200: ~25 s set-up, ~4.5 min throughput (two whole-model compiles of ~2 min
# each); ~35 s of toy shards, then the numerics runs, which need more than one 10-minute call: a run
# that the call's time stops saves a checkpoint (SIGTERM), and calling again with PHASES=numerics on
# the same machine (WORK, in the ignored .bench/ of the checkout, survives between calls while the
# machine stays warm) resumes it, skips a run that is complete, and probes once both are. Epochs of
# NUMERICS_EPOCH batches are seeded by their number, so a resumed run streams the batches of an
# uninterrupted one, except for the start of the epoch it was stopped in, which it replays.
#
# Settings (environment):
#   PHASES          "throughput numerics" (either alone), or "shapes": bench/fp8_shapes.py on the
#                   medium MAE (blocks and linear layers) and the large one's blocks (SHAPES_S 180,
#                   SHAPES_LARGE_S 90; fp8_shapes_medium.json, fp8_shapes_large.json)
#   TOTAL_S         570; the numerics runs get what is left of it less NUMERICS_RESERVE_S (150, for
#                   the checks, probes and summary), and are stopped (SIGTERM, a checkpoint) then
#   NUMERICS_SIZE   small; NUMERICS_MIN_FEATURES 384 (at the default 512 the small encoder, width
#                   384, has no layer that converts, only its decoders, width 512, do)
#   NUMERICS_STEPS  2000 in epochs of NUMERICS_EPOCH (100) batches, checkpointed after each epoch;
#                   NUMERICS_BATCH 32; NUMERICS_COMPILE true (eager FP8 is ~3x slower)
#   WORK            .bench/fp8_work (toy shards and the two runs); OUT /tmp/fp8_out
#   TOY_PATCHES 128; BATCH auto (256, or 192 on a card under 120 GiB)
#   FP8_RUN_SMOKE=1 CPU and tiny models, to check the script itself (the FP8 run is then refused)
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
OUT="${OUT:-/tmp/fp8_out}"
WORK="${WORK:-.bench/fp8_work}"
PHASES="${PHASES:-throughput numerics}"
TOTAL_S="${TOTAL_S:-570}"
NUMERICS_SIZE="${NUMERICS_SIZE:-small}"
NUMERICS_MIN_FEATURES="${NUMERICS_MIN_FEATURES:-384}"
NUMERICS_STEPS="${NUMERICS_STEPS:-2000}"
NUMERICS_BATCH="${NUMERICS_BATCH:-32}"
NUMERICS_COMPILE="${NUMERICS_COMPILE:-true}"
TOY_PATCHES="${TOY_PATCHES:-128}"
NUMERICS_EPOCH="${NUMERICS_EPOCH:-100}"
NUMERICS_RESERVE_S="${NUMERICS_RESERVE_S:-150}"
SMOKE="${FP8_RUN_SMOKE:-0}"
mkdir -p "$OUT" "$WORK"
WORK="$(cd "$WORK" && pwd)"
exec > >(tee -a "$OUT/fp8_device_run.log") 2>&1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
left() { echo $((TOTAL_S - (SECONDS - start))); }
say() { echo "[fp8_device_run +$((SECONDS - start))s] $*"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "$SMOKE" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { say "wheel install failed"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
PY=python3
command -v "$PY" >/dev/null || PY=python
$PY - <<'PY' || { say "environment check failed"; exit 1; }
import torch, torchao
print(f"torch {torch.__version__}, torchao {torchao.__version__}, cuda {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
PY

if [ "${BATCH:-auto}" = auto ]; then
  BATCH=$($PY -c "import torch; print(256 if not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory > 120 * 2**30 else 192)")
fi
accelerator=gpu
compiled=compile-full
throughput_size=(--sizes medium)
numerics_model=("model.encoder.size=$NUMERICS_SIZE" "trainer.fp8_min_features=$NUMERICS_MIN_FEATURES")
if [ "$SMOKE" = 1 ]; then  # CPU: tiny models, a few steps
  accelerator=cpu compiled=eager BATCH=2 NUMERICS_BATCH=2 TOY_PATCHES=24 NUMERICS_COMPILE=false
  throughput_size=(--smoke --fp8-min-features 64)
  numerics_model=(model.encoder.size=tiny model.encoder.width=64 model.encoder.depth=2 model.encoder.inter_depth=1
    model.encoder.overrides.aerial.patch_size=128 model.encoder.overrides.dem.patch_size=128 model.decoder_width=32
    model.decoder_depth=1 trainer.fp8_min_features=64)
fi

# ---------------------------------------------------------------------------------- 1. throughput
if [[ " $PHASES " == *" throughput "* ]]; then
  common=("${throughput_size[@]}" --precision bf16 fp8 --batch-sizes "$BATCH" --no-search --no-loader
    --warmup 3 --steps 8)
  # A whole-model compile takes ~2 min per model (BENCHMARKS.md): the bench's own budget check would
  # skip the second one, so timeouts cap each invocation instead (results are saved after each run);
  # with the caps, the worst case still ends inside the 10-minute call (numerics then skipped).
  say "throughput, compiled (whole model), batch $BATCH: bf16 then fp8"
  timeout -s INT 330 $PY bench/pretrain_throughput.py "${common[@]}" --modes "$compiled" \
    --json "$OUT/pretrain_throughput_compiled.json" 2>&1 | grep --line-buffered -v "register_constant"
  say "throughput, eager, batch $BATCH: bf16 then fp8"
  timeout -s INT 100 $PY bench/pretrain_throughput.py "${common[@]}" --modes eager \
    --json "$OUT/pretrain_throughput_eager.json" 2>&1 | grep --line-buffered -v "register_constant"
fi

# ---------------------------------------------------------------------------------- shapes
# Which block and linear shapes of the step gain from FP8 (bench/fp8_shapes.py): the medium MAE at
# the throughput batch, blocks and linear layers, both torchao recipes; then the large MAE's blocks
# in the tensorwise recipe (wider layers, where FP8 should pay first). ~3 min.
if [[ " $PHASES " == *" shapes "* ]]; then
  shapes_size=(--size medium --batch "$BATCH"); shapes_large=(--size large --batch $((BATCH / 2)))
  [ "$SMOKE" = 1 ] && shapes_size=(--smoke) shapes_large=(--smoke)
  say "shapes, medium, batch $BATCH"
  timeout -s INT "${SHAPES_S:-180}" $PY bench/fp8_shapes.py "${shapes_size[@]}" --budget $((${SHAPES_S:-180} - 30)) \
    --json "$OUT/fp8_shapes_medium.json" 2>&1 | grep --line-buffered -v "register_constant"
  say "shapes, large blocks, batch $((BATCH / 2))"
  timeout -s INT "${SHAPES_LARGE_S:-90}" $PY bench/fp8_shapes.py "${shapes_large[@]}" --recipes tensorwise \
    --no-linears --budget $((${SHAPES_LARGE_S:-90} - 30)) --json "$OUT/fp8_shapes_large.json" 2>&1 \
    | grep --line-buffered -v "register_constant"
fi

# ---------------------------------------------------------------------------------- 2. numerics
if [[ " $PHASES " == *" numerics "* ]]; then
  if [ ! -f "$WORK/shards/manifest.json" ]; then
    say "toy shards: $TOY_PATCHES patches"
    $PY -m shards.cli toy --out "$WORK/flairhub" --patches "$TOY_PATCHES" --seed 0 >/dev/null &&
      $PY -m shards.cli build --root "$WORK/flairhub" --split train val --out "$WORK/shards" --max-count 8 \
        --workers "$(nproc)" --no-progress >/dev/null || { say "toy shards failed"; exit 1; }
  fi
  workers=$(($(nproc) - 2)); [ "$workers" -lt 1 ] && workers=1
  complete=0
  for precision in bf16-mixed fp8; do
    run="$WORK/run-$precision"
    if [ -f "$run/numerics.done" ]; then
      say "numerics, $precision: complete ($NUMERICS_STEPS steps)"; complete=$((complete + 1)); continue
    fi
    seconds=$(($(left) - NUMERICS_RESERVE_S))
    if [ "$seconds" -lt 90 ]; then
      say "numerics, $precision: ${seconds} s left of TOTAL_S=$TOTAL_S; run again with PHASES=numerics (it resumes)"
      break
    fi
    resume=()
    if ls "$run"/checkpoints/*.ckpt >/dev/null 2>&1; then resume=(--resume); else rm -rf "$run"; fi
    say "numerics, $precision: ${resume[*]:-fresh run} for at most ${seconds} s, $workers loader workers"
    $PY -m pretrain.cli --config configs/pretrain/flairhub_medium.yaml "${numerics_model[@]}" "${resume[@]}" \
      --accelerator "$accelerator" --devices 1 --strategy auto --output-dir "$run" \
      data.train="$WORK/shards" data.val=null data.batch_size="$NUMERICS_BATCH" data.num_workers="$workers" \
      data.batches_per_epoch="$NUMERICS_EPOCH" trainer.max_epochs=$((NUMERICS_STEPS / NUMERICS_EPOCH)) \
      trainer.precision="$precision" trainer.compile="$NUMERICS_COMPILE" trainer.seed=0 trainer.log_every_n_steps=5 \
      trainer.checkpoint_every_n_steps="$NUMERICS_EPOCH" trainer.keep_checkpoints=1 \
      trainer.reconstruction_every_n_steps=0 optim.warmup_fraction=0.05 >>"$run.log" 2>&1 &
    pid=$!
    until_s=$((SECONDS + seconds))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$until_s" ]; do sleep 2; done
    kill -TERM "$pid" 2>/dev/null  # the trainer saves a checkpoint and stops at the next step
    until_s=$((SECONDS + 40))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$until_s" ]; do sleep 1; done
    kill -KILL "$pid" 2>/dev/null  # only if SIGTERM did not stop it
    wait "$pid"; status=$?
    say "numerics, $precision: pretrain exited with $status; last lines of its log:"
    grep -v "register_constant" "$run.log" | grep -E "fp8:|Error|error|stopped|global batch" | tail -n 6 | cut -c1-600
    tail -n 2 "$run.log" | cut -c1-600
    if [ "$status" -eq 0 ]; then touch "$run/numerics.done"; complete=$((complete + 1)); else break; fi
  done
  [ "$complete" -eq 2 ] && say "numerics: both runs complete" || say "numerics: incomplete (run again with PHASES=numerics to resume)"
  COMPLETE="$complete" WORK="$WORK" OUT="$OUT" $PY - <<'PY'
"""Both runs' logged losses side by side, and the FP8 checkpoint loaded into a plain bf16 encoder."""
import csv, os
from pathlib import Path

import torch

work, out = Path(os.environ["WORK"]), Path(os.environ["OUT"])
losses, pace = {}, {}
for precision in ("bf16-mixed", "fp8"):
    rows, seconds = {}, []
    for path in sorted((work / f"run-{precision}").glob("csv/version_*/metrics.csv")):  # one per (re)start
        with path.open() as handle:
            for r in csv.DictReader(handle):
                if r.get("train/loss"):
                    rows[int(r["step"])] = float(r["train/loss"])
                if r.get("perf/step_seconds"):
                    seconds.append(float(r["perf/step_seconds"]))
    losses[precision] = rows
    pace[precision] = sorted(seconds)[len(seconds) // 2] if seconds else float("nan")
steps = sorted(set(losses["bf16-mixed"]) | set(losses["fp8"]))
with (out / "numerics_loss.csv").open("w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["step", "bf16_loss", "fp8_loss"])
    for step in steps:
        writer.writerow([step, losses["bf16-mixed"].get(step, ""), losses["fp8"].get(step, "")])
lines = [f"steps logged: bf16 {len(losses['bf16-mixed'])} (last {max(losses['bf16-mixed'], default=None)}), "
         f"fp8 {len(losses['fp8'])} (last {max(losses['fp8'], default=None)})",
         f"median step (each run alone on the GPU): bf16 {pace['bf16-mixed'] * 1e3:.1f} ms, fp8 {pace['fp8'] * 1e3:.1f} ms"]
try:
    from maestro.hub.folder import load_strict
    from maestro.models.encoder import MaestroEncoder
    from maestro.models.zoo import load_encoder_weights

    fp8 = load_encoder_weights(work / "run-fp8")
    encoder = MaestroEncoder(fp8.config).to(torch.bfloat16)
    load_strict(encoder, fp8.state, "the FP8 run's checkpoint")
    plain = load_encoder_weights(work / "run-bf16-mixed")
    same = list(fp8.state) == list(plain.state) and all(
        fp8.state[k].dtype == plain.state[k].dtype and fp8.state[k].shape == plain.state[k].shape for k in fp8.state
    )
    lines.append(f"FP8 checkpoint ({fp8.note}) loads into a plain bf16 encoder: yes; same keys, dtypes "
                 f"and shapes as the bf16 run's: {same}")
except Exception as error:  # reported, the summary goes on
    lines.append(f"FP8 checkpoint check failed: {type(error).__name__}: {error}")
try:  # the encoders' features: a token-level linear probe of each (CPU), on the toy's val split
    if os.environ["COMPLETE"] != "2":
        raise RuntimeError("not run: the probes compare the two complete runs")
    from finetune.linear_probe import TARGETS, linear_probe_scores, probe_encoders, token_features
    from maestro.tasks import get_task

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    shards = str(work / "shards")
    for precision in ("bf16-mixed", "fp8"):
        arms = probe_encoders(str(work / f"run-{precision}"), shards, random_seeds=(0,))
        for name, (config, task) in arms.items():
            if name != "pretrained" and precision == "fp8":
                continue  # one random arm (the same for both runs) is the floor
            train_x, train_y = token_features(config, task, "train", 20)
            val_x, val_y = token_features(config, task, "val")
            a, b = torch.cat(list(train_x.values()), 1), torch.cat(list(val_x.values()), 1)
            cells = []
            for t, (target, level) in enumerate(TARGETS):
                score = linear_probe_scores(a, train_y[t], b, val_y[t], get_task(target).target(level))
                cells.append(f"{target}-{level} mIoU {score.miou:.3f}")
            arm = f"{precision} run" if name == "pretrained" else name
            lines.append(f"linear probe, all inputs, {arm}: " + ", ".join(cells))
except Exception as error:  # reported, the summary goes on
    lines.append(f"linear probe failed: {type(error).__name__}: {error}")
(out / "numerics.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  # the loss per range of steps and the figure, as BENCHMARKS.md shows them (says so when a run has no steps)
  $PY bench/fp8_numerics_plot.py "$OUT/numerics_loss.csv" --out "$OUT/fp8_numerics.png" | tee -a "$OUT/numerics.txt"
fi

# ---------------------------------------------------------------------------------- summary
{
  echo "# FP8 device run ($(date -u +%FT%TZ), ${SECONDS}s)"
  $PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  for name in compiled eager; do
    file="$OUT/pretrain_throughput_$name.json"
    [ -f "$file" ] || continue
    echo; echo "## throughput, $name"
    FILE="$file" $PY - <<'PY'
import json, os
data = json.load(open(os.environ["FILE"]))
print("| precision | mode | batch | step ms | samples/s | MFU (bf16-eq.) | peak GiB | first step s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in data["runs"]:
    batch = f"{r['batch']}" + (f" (asked {r['requested_batch']})" if "requested_batch" in r else "")
    if r["status"] != "ok":
        print(f"| {r['precision']} | {r['mode']} | {batch} | {r['status']}: {r.get('error', '')[:60]} | | | | |")
        continue
    print(f"| {r['precision']} | {r['mode']} | {batch} | {r['step_ms']:.1f} | {r['samples_per_s']:.1f} | "
          f"{r['mfu']:.1%} | {r.get('peak_mem_gib', float('nan')):.1f} | {r['first_step_s']:.0f} |")
for item in data.get("skipped", []):
    print(f"skipped: {item}")
PY
  done
  if [ -f "$OUT/numerics.txt" ]; then echo; echo "## numerics"; cat "$OUT/numerics.txt"; fi
} >"$OUT/summary.md"
rm -f "$OUT/numerics.txt"
cat "$OUT/summary.md"
say "done"
