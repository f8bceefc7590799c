"""#29's downstream check: crop type (LPIS level 1) trained and tested on Sentinel-2 series whose
cloudy dates are (a) dropped, (b) filled by linear interpolation in time, (c) restored by the
gap-filling model.

    PYTHONPATH=. python bench/gapfill_downstream.py       # after `make example` and README's `gapfill`
    PYTHONPATH=. python bench/gapfill_downstream.py --smoke --work /tmp/gapfill_downstream_smoke

Each arm is a shard set written by ``shards fill`` (its Python API) from ``--shards`` into
``WORK/filled/METHOD`` (a rerun keeps what still holds), then ``finetune --task lpis --level 1``
from the ``--pretrain`` encoder with ``model.modalities=[s2]`` (the comparison is about the S2
series, so no other input may make up for it), ``--config`` (the example's fine-tuning recipe) and
the same seeds and budget for every arm, trained on the filled train split, validated on its val
split and tested on its ``--test-split``. All three use one cloud threshold, the gap-filling
model's. A filled pixel's mask is cleared, so fine-tuning's date selection takes filled dates as
clear; dropped dates are gone. ``--smoke``: one seed, one epoch of two batches of two on CPU, to
check the plumbing (its scores mean nothing).

Prints a markdown table (method, seed, test mIoU, OA, share of the S2 pixels replaced or of the
dates dropped over the filled splits) and writes ``--json`` (default ``WORK/gapfill_downstream.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from finetune.cli import run as finetune
from finetune.config import FinetuneConfig
from maestro.api_gapfill import load_gapfill
from maestro.config import load_config
from shards.fill import METHODS, FillConfig, FillResult, fill

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "trainer.max_epochs=1",
    "data.batches_per_epoch=2",
    "data.batch_size=2",
    "data.val_batches=1",
    "data.shuffle_buffer=4",
    "data.num_workers=0",
    "model.decoder_channels=32",
    "trainer.checkpoint_every_n_steps=100000",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pretrain", default="example/runs/pretrain", help="pretraining run (the encoder)")
    parser.add_argument("--gapfill", default="example/runs/gapfill", help="gapfill run or model folder")
    parser.add_argument("--shards", type=Path, default=Path("example/shards"), help="train/val/test shards")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gapfill_downstream"))
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "finetune" / "toy.yaml")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: --config's)")
    parser.add_argument("--cloudy-date-fraction", type=float, default=0.05, help="drop: dates above it go")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--device", default="cpu", help="the gap-filling model's device")
    parser.add_argument("--accelerator", default="cpu", help="fine-tuning's trainer.accelerator")
    parser.add_argument("--smoke", action="store_true", help="one seed, a tiny budget: the plumbing only")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "overrides", nargs="*", help="dotted fine-tuning overrides for every arm (data.num_workers=0)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = args.seeds[:1]
    return args


def fill_all(args: argparse.Namespace, threshold: float) -> dict[str, FillResult]:
    """method -> its filled shard set (every split of ``--shards``)."""
    filled = {}
    for method in args.methods:
        config = FillConfig(
            args.shards,
            args.work / "filled" / method,
            method,
            model=str(args.gapfill) if method == "model" else None,
            cloud_threshold=threshold,
            cloudy_date_fraction=args.cloudy_date_fraction,
            device=args.device,
            progress=not args.smoke,
        )
        filled[method] = fill(config)
    return filled


def changed(result: FillResult) -> tuple[float, str]:
    """Share of the S2 dates dropped or pixels replaced, over every filled split."""
    counts = result.counts.values()
    dropped, dates = sum(c.dates_dropped for c in counts), sum(c.dates for c in counts)
    if dropped:
        return dropped / max(dates, 1), "dates dropped"
    return sum(c.pixels_replaced for c in counts) / max(sum(c.pixels for c in counts), 1), "pixels replaced"


def overrides(args: argparse.Namespace, shards: Path, out: Path, seed: int) -> list[str]:
    words = [f"data.{split}={shards}" for split in ("train", "val", "test")]
    words += [f"data.test_split={args.test_split}", f"model.init={args.pretrain}", "model.modalities=[s2]"]
    words += ["task.name=lpis", "task.level=1", f"trainer.output_dir={out}", f"trainer.seed={seed}"]
    words += [f"trainer.accelerator={args.accelerator}", "trainer.devices=1", "eval.num_figures=0"]
    if args.epochs is not None:
        words.append(f"trainer.max_epochs={args.epochs}")
    return [*words, *(SMOKE if args.smoke else []), *args.overrides]


def run(args: argparse.Namespace) -> dict[str, Any]:
    threshold = load_gapfill(args.gapfill).model.config.cloud_threshold
    filled = fill_all(args, threshold)
    results = []
    for method, result in filled.items():
        share, what = changed(result)
        for seed in args.seeds:
            out = args.work / "runs" / f"{method}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)  # this script's own scratch run
            config = load_config(FinetuneConfig, args.config, overrides(args, result.out, out, seed))
            started = time.perf_counter()
            scores = finetune(config)
            results.append(
                {
                    "method": method,
                    "seed": seed,
                    "miou": float(scores.miou),
                    "oa": float(scores.overall_accuracy),
                    "changed_share": share,
                    "changed": what,
                    "seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    fills = {
        method: {split: dataclasses.asdict(counts) for split, counts in result.counts.items()}
        for method, result in filled.items()
    }
    return {"cloud_threshold": threshold, "fills": fills, "results": results}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| method | seed | test mIoU | test OA | S2 changed |", "|---|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['seed']} | {100 * r['miou']:.2f} % | {100 * r['oa']:.2f} % | "
            f"{100 * r['changed_share']:.1f} % {r['changed']} |"
        )
    methods = list(dict.fromkeys(r["method"] for r in results))
    if len(results) > len(methods):
        lines += ["", "| method | mean test mIoU | mean test OA |", "|---|---:|---:|"]
        for method in methods:
            rows = [r for r in results if r["method"] == method]
            miou, oa = (sum(r[k] for r in rows) / len(rows) for k in ("miou", "oa"))
            lines.append(f"| {method} | {100 * miou:.2f} % | {100 * oa:.2f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    print(f"\nLPIS level 1 on S2 alone, {len(args.seeds)} seed(s), from {args.pretrain} ({args.shards})")
    print(table(report["results"]))
    path = args.json or args.work / "gapfill_downstream.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **report}, indent=1))
    return report


if __name__ == "__main__":
    main()
