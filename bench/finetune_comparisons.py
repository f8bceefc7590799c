"""Two fine-tuning comparisons on the toy dataset, each arm on the same data, budget and seeds.

    PYTHONPATH=. python bench/finetune_comparisons.py                    # ~10 min on 2 CPU cores
    PYTHONPATH=. python bench/finetune_comparisons.py --patches 24 --seeds 0 --pretrain-steps 100

(a) probe: land cover (level 1) with a frozen encoder and a trained ``uperfuse`` head, the encoder
    pretrained by ``pretrain`` (MAE, ``--pretrain-steps`` steps of 4 patches) vs a random one.
(b) inputs: crop type (LPIS levels 1 and 2) trained from scratch on aerial + Sentinel-2 vs aerial
    alone (the toy's crops look alike from above on one date and differ by their S2 phenology).

Everything runs on CPU with a tiny encoder (width 64, two blocks; 4 x 4 aerial tokens, one token
per 10 m S2 pixel): a toy dataset of ``--patches`` patches (seed 0) is written,
sharded, fine-tuned on its train split and tested on its val split (no validation, no EMA: the
last weights are tested). Prints a markdown table (mIoU, OA per arm and seed) and writes
``--json`` (default ``$OUT/finetune_comparisons.json`` or ``./finetune_comparisons.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, TypeVar

import torch

from maestro.config import apply_override, from_dict

T = TypeVar("T")

# Small enough for minutes on CPU: 4 x 4 aerial/DEM tokens (patch 128 of 512 px), S2 tokens of one
# 10 m pixel (10 x 10, where the toy's crop phenology is), 2 x 2 S1 tokens, width 64, two blocks.
ENCODER: dict[str, Any] = {
    "modalities": ["aerial", "dem", "s2", "s1_asc", "s1_des"],
    "overrides": {
        "aerial": {"patch_size": 128},
        "dem": {"patch_size": 128},
        "s2": {"num_dates": 4, "patch_size": 1},
        "s1_asc": {"num_dates": 2, "patch_size": 5},
        "s1_des": {"num_dates": 2, "patch_size": 5},
    },
    "size": "tiny",
    "width": 64,
    "depth": 2,
    "inter_depth": 1,
    "grid_size": 20,
}


def build_config(cls: type[T], raw: dict[str, Any], overrides: tuple[str, ...] = ()) -> T:
    """``cls`` from ``raw`` and then ``key.sub=value`` overrides, checked as a config file is."""
    raw = copy.deepcopy(raw)  # an override must not edit ENCODER
    for override in overrides:
        apply_override(raw, override)
    return from_dict(cls, raw)


def build_data(work: Path, patches: int) -> Path:
    from maestro.data.toy import write_toy_dataset
    from shards.cli import main

    shards = work / "shards"
    if not (shards / "manifest.json").is_file():
        write_toy_dataset(work / "flairhub", num_patches=patches, seed=0)
        args = ["build", "--root", str(work / "flairhub"), "--split", "train", "val"]
        assert main([*args, "--out", str(shards), "--max-count", "8", "--no-progress"]) == 0
    return shards


def pretrain(shards: Path, out: Path, steps: int) -> Path:
    from pretrain.cli import run
    from pretrain.config import PretrainConfig

    raw = {
        "data": {"train": str(shards), "batch_size": 4, "num_workers": 0, "batches_per_epoch": steps},
        "model": {"encoder": ENCODER, "decoder_width": 32, "decoder_heads": 2, "decoder_depth": 1},
        "optim": {"base_lr": 1e-3},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 1,
            "checkpoint_every_n_steps": 100000,
            "reconstruction_every_n_steps": 0,
            "ema_decay": 0.9,
            "accelerator": "cpu",
            "devices": 1,
        },
    }
    run(build_config(PretrainConfig, raw))
    return out


def finetune(shards: Path, out: Path, steps: int, seed: int, *overrides: str) -> dict:
    from finetune.cli import run
    from finetune.config import FinetuneConfig

    raw = {
        "data": {
            "train": str(shards),
            "val": None,
            "test": str(shards),
            "test_split": "val",
            "batch_size": 2,
            "num_workers": 0,
            "shuffle_buffer": 4,
            "batches_per_epoch": steps,
        },
        "model": {"init": "random", "encoder": ENCODER, "decoder_channels": 32},
        "optim": {"base_lr": 4e-3, "warmup_fraction": 0.1},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "ema_decay": 0,
            "checkpoint_every_n_steps": 100000,
            "seed": seed,
        },
        "eval": {"num_figures": 0},
    }
    start = time.perf_counter()
    scores = run(build_config(FinetuneConfig, raw, overrides))
    return {
        "miou": float(scores.miou),
        "oa": float(scores.overall_accuracy),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/finetune_comparisons"))
    parser.add_argument("--patches", type=int, default=48)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=120, help="fine-tuning steps of 2 patches per arm")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shards = build_data(args.work, args.patches)
    run_dir = args.work / f"pretrain-{args.pretrain_steps}"
    if not (run_dir / "checkpoints").is_dir():
        pretrain(shards, run_dir, args.pretrain_steps)
    probe = ["task.name=lc", "task.level=1", "model.probe=true", "model.head=uperfuse"]
    arms = {
        ("a: LC probe", "pretrained"): [*probe, f"model.init={run_dir}", "model.encoder=null"],
        ("a: LC probe", "random"): probe,
    }
    for level in (1, 2):
        lpis = ["task.name=lpis", f"task.level={level}"]
        arms[(f"b: LPIS-{level}", "aerial+s2")] = [*lpis, "model.modalities=[aerial,s2]"]
        arms[(f"b: LPIS-{level}", "aerial")] = [*lpis, "model.modalities=[aerial]"]
    results = []
    for (comparison, arm), overrides in arms.items():
        for seed in args.seeds:
            out = args.work / "runs" / f"{comparison.split(':')[0]}-{comparison[-1]}-{arm}-{seed}"
            shutil.rmtree(out, ignore_errors=True)  # this script's own scratch run
            score = finetune(shards, out, args.steps, seed, *overrides)
            results.append({"comparison": comparison, "arm": arm, "seed": seed, **score})
            print(json.dumps(results[-1]), flush=True)
    print(
        f"\n{args.patches} toy patches, pretraining {args.pretrain_steps} steps, {args.steps} fine-tuning steps"
    )
    print(
        "| comparison | arm | "
        + " | ".join(f"mIoU seed {s}" for s in args.seeds)
        + " | mean mIoU | mean OA |"
    )
    print("|---|---|" + "---:|" * (len(args.seeds) + 2))
    for comparison, arm in arms:
        rows = [r for r in results if r["comparison"] == comparison and r["arm"] == arm]
        mious = " | ".join(f"{r['miou']:.3f}" for r in rows)
        mean_miou = sum(r["miou"] for r in rows) / len(rows)
        mean_oa = sum(r["oa"] for r in rows) / len(rows)
        print(f"| {comparison} | {arm} | {mious} | {mean_miou:.3f} | {mean_oa:.3f} |")
    path = args.json or Path(os.environ.get("OUT", ".")) / "finetune_comparisons.json"
    path.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
