"""Fine-tuning step throughput: samples/s, step time, peak memory and MFU per head, eager vs compiled.

    PYTHONPATH=. python bench/finetune_throughput.py --smoke        # CPU-testable, tiny encoder
    PYTHONPATH=. python bench/finetune_throughput.py                # medium, both heads, one GPU

One timed step = segmenter forward under bf16 autocast (MAESTRO encoder without masking on the
FLAIR-HUB default inputs, 1880 tokens per sample; head; logits at 512 x 512) + cross-entropy on
random 15-class labels + backward + fused AdamW step, on a synthetic batch already on the device.
FLOPs per sample are counted as in ``bench/pretrain_throughput.py`` (``torch.utils.flop_counter``:
matrix products, convolutions, attention; forward + backward); MFU = FLOPs x samples/s / 790e12.
Results print as a markdown table and go to ``--json`` (default ``$OUT/finetune_throughput.json``).

``--precision bf16 fp8`` times each configuration in bf16-mixed and with the encoder's large block
linear layers in FP8 (torchao float8 training, as ``trainer.precision: fp8`` converts them:
:mod:`maestro.training.fp8`). FLOPs are counted before the conversion: MFU stays bf16-equivalent.
A configuration that fails (out of memory included) is reported with its error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config
import torch.nn.functional as F
from torch import Tensor, nn

from bench.pretrain_throughput import (
    PEAK_FLOPS,
    PRECISIONS,
    Timer,
    autocast,
    device_meta,
    failure,
    free,
    is_oom,
    make_batch,
    make_optimizer,
    print_profile,
    profile,
    train_step,
)
from maestro.models import EncoderConfig, MAEConfig, count_flops
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config
from maestro.training.fp8 import FP8_MIN_FEATURES, convert_to_fp8

log = logging.getLogger("finetune_throughput")
NUM_CLASSES = 15


class WithLoss(nn.Module):
    """Segmenter + cross-entropy, returning ``{"loss"}`` like the MAE (what the FLOP counter and the
    timed step call)."""

    def __init__(self, segmenter: MaestroSegmenter, labels: Tensor):
        super().__init__()
        self.segmenter = segmenter
        self.labels = labels

    def forward(
        self, inputs: dict, times: dict, valid: dict | None = None, padded: bool | None = None
    ) -> dict[str, Tensor]:
        # ``padded``: read on the host, as the stage does (no device sync, no graph break).
        logits = self.segmenter(inputs, times, valid, padded=padded)["logits"]
        labels = self.labels[: logits.shape[0]]
        return {"loss": F.cross_entropy(logits.float(), labels)}


def build(head: str, smoke: bool, batch_size: int, device: torch.device) -> tuple[WithLoss, MAEConfig]:
    encoder = tiny_config().encoder if smoke else EncoderConfig(size="medium")
    label_size = 32 if smoke else 512
    segmenter = MaestroSegmenter(
        SegmenterConfig(encoder=encoder, num_classes=NUM_CLASSES, head=head, label_size=label_size)
    ).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch_size, label_size, label_size), device=device)
    return WithLoss(segmenter, labels), MAEConfig(encoder=encoder)


def measure(
    head: str,
    mode: str,
    batch_size: int,
    args: argparse.Namespace,
    device: torch.device,
    precision: str = "bf16",
) -> dict[str, Any]:
    record: dict[str, Any] = {"head": head, "precision": precision, "mode": mode, "batch": batch_size}
    try:
        model, config = build(head, args.smoke, batch_size, device)
        record["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        batch = make_batch(config, batch_size, device)
        flops_batch = make_batch(config, 2, device)
        with autocast(device):
            flops = count_flops(model, flops_batch)["total"] / 2
        record["gflop_per_sample"] = flops / 1e9
        if precision == "fp8":  # after counting: FLOPs stay bf16-equivalent; before compiling
            convert_to_fp8(model.segmenter, args.fp8_min_features)
        optimizer = make_optimizer(model, device)
        fn = torch.compile(model, mode=args.compile_mode) if mode == "compile" else model
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            train_step(fn, optimizer, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["warmup_s"] = time.perf_counter() - start
        timer = Timer(device)
        for _ in range(args.steps):
            with timer.step():
                train_step(fn, optimizer, batch, device)
        times = sorted(timer.seconds())
        median = times[len(times) // 2]
        samples = batch_size / median
        record.update(
            status="ok", step_ms=median * 1e3, samples_per_s=samples, mfu=flops * samples / PEAK_FLOPS
        )
        if device.type == "cuda":
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if args.profile:
            base = {part: values for part, values in batch.items() if part != "padded"}
            del batch  # ``profile`` tiles its own batch from ``base``
            record["profile"] = profile(fn, optimizer, config, batch_size, device, base, steps=2)
            print_profile(f"{head} {mode} batch {batch_size}", record["profile"])
            print(record["profile"]["op_table"])
    except Exception as error:  # noqa: BLE001 - an OOM is a result; anything else is reported and logged
        record.update(failure(error))
        if not is_oom(error):
            log.exception("%s %s %s batch %d failed", head, precision, mode, batch_size)
    finally:
        free(device)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny encoder, 32 px labels, 2 steps (CPU ok)")
    parser.add_argument("--heads", nargs="+", default=["uperfuse", "maestro"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["bf16"],
        choices=PRECISIONS,
        help="bf16 (bf16-mixed autocast) and/or fp8 (the same with FP8 encoder block linear layers)",
    )
    parser.add_argument(
        "--fp8-min-features",
        type=int,
        default=FP8_MIN_FEATURES,
        help="fp8: smallest in/out features of a converted linear layer (maestro.training.fp8)",
    )
    parser.add_argument(
        "--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs"
    )
    parser.add_argument(
        "--inductor",
        nargs="+",
        default=[],
        metavar="OPTION=VALUE",
        help="inductor config options for the compiled runs, e.g. coordinate_descent_tuning=true",
    )
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler summary per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(os.environ["OUT"]) / "finetune_throughput.json" if os.environ.get("OUT") else None,
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        args.modes, args.batch_sizes, args.warmup, args.steps = ["eager"], [2], 1, 2
    for option in args.inductor:
        name, _, value = option.partition("=")
        setattr(torch._inductor.config, name, json.loads(value))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results: dict[str, Any] = {"meta": {**device_meta(device), "argv": sys.argv}, "runs": []}
    for head in args.heads:
        for precision in args.precision:
            for mode in args.modes:
                for batch_size in args.batch_sizes:
                    record = measure(head, mode, batch_size, args, device, precision)
                    log.info("%s", {k: v for k, v in record.items() if k != "profile"})
                    results["runs"].append(record)
                    if args.json is not None:
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(results, indent=2))
                    if device.type == "cuda" and mode == "compile":
                        torch._dynamo.reset()  # each model compiles afresh, within the recompile limit
    print(
        "| head | precision | mode | batch | samples/s | step ms | GFLOP/sample (bf16-eq.) | MFU | peak GiB | params M |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["runs"]:
        head = f"| {r['head']} | {r['precision']} | {r['mode']} | {r['batch']} |"
        if r.get("status") != "ok":
            print(f"{head} {r.get('status')}: {r.get('error', '')[:80]} | | | | | |")
            continue
        print(
            f"{head} {r['samples_per_s']:.1f} | {r['step_ms']:.1f} | "
            f"{r['gflop_per_sample']:.1f} | {100 * r['mfu']:.1f}% | {r.get('peak_mem_gib', 0):.1f} | "
            f"{r['params_m']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
