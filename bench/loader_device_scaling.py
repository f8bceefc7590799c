"""Shard loader with integer rasters shipped unscaled vs scaled to float32 in the workers.

    PYTHONPATH=. python bench/loader_device_scaling.py --shards example/shards --workers 0 2

Same shards, same MAESTRO preprocessing (FLAIR-HUB default inputs: aerial, dem, s2 16 dates,
s1_asc/s1_des 4 dates), same collation into shared memory: once with every input scaled to
float32 in the workers (the old path), once with ``scale_on_device`` (aerial stays uint8, S2
uint16; the registry scaling runs after the transfer: on the GPU with ``--device cuda``, where
batches are pinned and copied as the pretraining data module does, else on the host). Reports
batch bytes (what crosses shared memory and PCIe) and samples/s per mode and worker count.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from maestro.data.preprocess import MaestroTransform, build_preprocess_config, scale_batch
from maestro.modalities import DEFAULT_INPUTS, with_companions
from shards.loader import make_loader


def measure(
    shards: Path,
    scale_on_device: bool,
    mode: str,
    workers: int,
    batch_size: int,
    batches: int,
    device: torch.device,
) -> tuple[float, float]:
    config = dataclasses.replace(build_preprocess_config(DEFAULT_INPUTS), scale_on_device=scale_on_device)
    loader = make_loader(
        shards,
        preprocess=MaestroTransform(config, train=mode == "train", seed=0),
        mode=mode,
        split="train",
        batch_size=batch_size,
        num_workers=workers,
        modalities=with_companions(DEFAULT_INPUTS),
        batches_per_epoch=batches if mode == "train" else None,
        shuffle_buffer=16,
        pin_memory=device.type == "cuda",
    )
    count, nbytes, start = 0, 0, None
    for index, batch in enumerate(loader):
        if index == 1:  # the first batch pays worker start-up and the shuffle buffer fill
            start, count = time.perf_counter(), 0
        nbytes = sum(v.nbytes for v in batch["inputs"].values())
        batch["inputs"] = {k: v.to(device, non_blocking=True) for k, v in batch["inputs"].items()}
        scale_batch(batch, config)
        count += next(iter(batch["inputs"].values())).shape[0]
        if index + 1 >= batches:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start), nbytes / batch_size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=Path, default=Path("example/shards"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print("| mode | workers | inputs | MB/sample | samples/s |")
    print("|---|---:|---|---:|---:|")
    for mode in ("train", "eval"):
        for workers in args.workers:
            for on_device in (False, True):
                rate, size = measure(
                    args.shards, on_device, mode, workers, args.batch_size, args.batches, device
                )
                label = "integers unscaled" if on_device else "float32 in workers"
                print(f"| {mode} | {workers} | {label} | {size / 1e6:.2f} | {rate:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
