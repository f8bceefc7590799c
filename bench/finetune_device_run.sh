#!/usr/bin/env bash
# Fine-tuning speed on one lent GPU (H100 80 GB or H200), in one call of under 10 minutes:
#
#   1. bench/finetune_throughput.py: the uperfuse and MAESTRO heads on the medium encoder, compiled,
#      batch 64, in bf16 and with the encoder's block linear layers in FP8 (MFU counted in
#      bf16-equivalent FLOPs, peak memory);
#   2. bench/compare.py --throughput: the Swin-UTAE baseline beside MAESTRO (uperfuse) on LPIS-I
#      (SPOT + S2 + S1) at equal batch, eager and compiled;
#   3. bench/upernet_resize.py: smp's UPerNet decoder against MAESTRO's matrix-product resizes, alone,
#      at the uperfuse shapes (compiled, ~2 min; PARTS="upernet", not in the default).
#
# Run from the repository root, `bash bench/finetune_device_run.sh`, on a GPU machine where wheels of
# the packages its image lacks lie in .whl/ (installed into /tmp/site first). Results land in $OUT:
# finetune_throughput.json, compare.json, upernet_resize.json and finetune_device_run.log (the
# tables are in the log). Each part runs under a timeout (FINETUNE_S 330, COMPARE_S 220, UPERNET_S
# 150): results are saved after every
# configuration, so a part cut short still reports what it measured. A whole-model compile of the
# medium fine-tuning network takes ~200 s on an H100 or H200, so one call holds about two of them:
# choose with PARTS ("finetune compare"), HEADS ("uperfuse maestro"), PRECISIONS ("bf16 fp8"),
# COMPARE_MODELS ("maestro swin-utae") and COMPARE_MODES ("eager compile"). bench/compare.py runs
# each of its measurements in a process of its own, so a compile that aborts is one reported row,
# and one still running after CHILD_S seconds (COMPARE_S - 20) is stopped and reported as timed out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/finetune_out}"
BATCH="${BATCH:-64}"
COMPARE_BATCH="${COMPARE_BATCH:-32}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/finetune_device_run.log") 2>&1
export PYTHONUNBUFFERED=1
start=$SECONDS
say() { echo "[finetune_device_run +$((SECONDS - start))s] $*"; }
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { say "wheel install failed"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

PARTS="${PARTS:-finetune compare}"
HEADS="${HEADS:-uperfuse maestro}"
PRECISIONS="${PRECISIONS:-bf16 fp8}"
COMPARE_MODELS="${COMPARE_MODELS:-maestro swin-utae}"
COMPARE_MODES="${COMPARE_MODES:-eager compile}"

if [[ " $PARTS " == *" finetune "* ]]; then
  say "fine-tuning step, heads: $HEADS, compiled, batch $BATCH, precisions: $PRECISIONS"
  # shellcheck disable=SC2086  # the lists split into arguments
  timeout -s INT "${FINETUNE_S:-330}" python3 bench/finetune_throughput.py --heads $HEADS --modes compile \
    --batch-sizes "$BATCH" --precision $PRECISIONS --warmup 2 --steps 6 --json "$OUT/finetune_throughput.json" \
    2>&1 | grep --line-buffered -v "register_constant"
fi

if [[ " $PARTS " == *" compare "* ]]; then
  say "LPIS-I, models: $COMPARE_MODELS, batch $COMPARE_BATCH, modes: $COMPARE_MODES"
  # shellcheck disable=SC2086
  timeout -s INT "${COMPARE_S:-220}" python3 bench/compare.py --throughput --configs LPIS-I --models $COMPARE_MODELS \
    --modes $COMPARE_MODES --batch-sizes "$COMPARE_BATCH" --warmup 2 --steps 8 --json "$OUT/compare.json" \
    --child-timeout "${CHILD_S:-$((${COMPARE_S:-220} - 20))}" \
    2>&1 | grep --line-buffered -v "register_constant"
fi
if [[ " $PARTS " == *" upernet "* ]]; then
  say "UPerNet decoder alone: smp's interpolation against matrix-product resizes, batch $BATCH"
  timeout -s INT "${UPERNET_S:-150}" python3 bench/upernet_resize.py --batch "$BATCH" --json "$OUT/upernet_resize.json" \
    2>&1 | grep --line-buffered -v "register_constant"
fi
say "done"
