"""Cloud-removal throughput: km2 per hour for a year of Sentinel-2, the network alone, on one device.

    PYTHONPATH=. python bench/gapfill_throughput.py --smoke     # CPU, tiny MAE, seconds
    PYTHONPATH=. python bench/gapfill_throughput.py             # medium MAE (FLAIR-HUB inputs), one GPU

A medium MAESTRO MAE with its cloud-removal head (random weights: speed does not depend on them)
restores synthetic 102.4 m tiles the way ``predict --reconstruct s2`` does
(:func:`maestro.models.gapfill.restore_batch`): a year of Sentinel-2 (``--dates``, 73 = one every
five days) with a third of its pixels cloudy, restored run by run of the encoder's 16 dates, beside the
tile's aerial, elevation and Sentinel-1 inputs, in bf16 on GPU. Reading the zone and writing the
GeoTIFF are not timed. Prints tiles/s and km2/h, writes ``--json`` (default ``$OUT/gapfill_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from bench.pretrain_throughput import device_meta
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.gapfill import MaestroGapFill, restore_batch
from maestro.models.gapfill_config import GapFillConfig
from maestro.sample import FLAGS

TILE_KM2 = 0.1024**2


def synthetic_batch(config: GapFillConfig, tiles: int, dates: int, device: torch.device) -> dict:
    """Inputs at the encoder's sizes; the target with ``dates`` dates, a third of its pixels flagged."""
    specs = config.mae.encoder.specs
    batch: dict = {"inputs": {}, "times": {}, "valid": {}}
    for key, spec in specs.items():
        count = dates if key == config.target else spec.num_dates
        batch["inputs"][key] = torch.rand(
            tiles, count, spec.num_bands, spec.image_size, spec.image_size, device=device
        )
        days = torch.linspace(0, 360, count, device=device)
        batch["times"][key] = torch.stack([torch.zeros_like(days), days, torch.zeros_like(days)], -1).expand(
            tiles, -1, -1
        )
        batch["valid"][key] = torch.ones(tiles, count, dtype=torch.bool, device=device)
    size = specs[config.target].image_size
    batch[FLAGS] = {config.target: torch.rand(tiles, dates, size, size, device=device) < 1 / 3}
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU")
    parser.add_argument("--tiles", type=int, default=32, help="tiles per batch (default 32)")
    parser.add_argument("--dates", type=int, default=73, help="Sentinel-2 dates of the year (default 73)")
    parser.add_argument("--steps", type=int, default=5, help="timed batches (default 5)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        small = {"patch_size": 128}
        encoder = EncoderConfig(
            overrides={"aerial": small, "dem": small, "s2": {"num_dates": 4}, "s1_asc": {"num_dates": 2}, "s1_des": {"num_dates": 2}},
            size="tiny", width=32, depth=2, inter_depth=1,
        )  # fmt: skip
        mae = MAEConfig(encoder=encoder, decoder_width=32, decoder_heads=2, decoder_depth=1)
        args.tiles, args.dates, args.steps = 2, 8, 1
    else:
        mae = MAEConfig(encoder=EncoderConfig(size="medium", fusion="group", inter_depth=3))
    config = GapFillConfig(mae)
    model = MaestroGapFill(config).to(device).eval()
    batch = synthetic_batch(config, args.tiles, args.dates, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with autocast:
        restore_batch(model, batch)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(args.steps):
            restore_batch(model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    tiles_per_s = args.tiles / seconds
    result = {
        "device": device_meta(device),
        "tiles_per_batch": args.tiles,
        "s2_dates": args.dates,
        "encoder_dates": config.mae.encoder.specs[config.target].num_dates,
        "tiles_per_s": round(tiles_per_s, 2),
        "km2_per_hour": round(tiles_per_s * TILE_KM2 * 3600, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    print(json.dumps(result, indent=2))
    out = args.json or (
        Path(os.environ["OUT"]) / "gapfill_throughput.json" if os.environ.get("OUT") else None
    )
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
