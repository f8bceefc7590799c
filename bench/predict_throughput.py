"""Large-area inference throughput: km2 per hour of ``predict`` and the cost of blending.

    PYTHONPATH=. python bench/predict_throughput.py --smoke        # CPU, tiny segmenter, 51.2 m zone
    PYTHONPATH=. python bench/predict_throughput.py                # medium segmenter, 1 km2, one GPU

A medium MAESTRO segmenter (uperfuse head, FLAIR-HUB default inputs: aerial, dem, s2, s1_asc,
s1_des; 102.4 m tiles of 512 x 512 labels; random weights, speed does not depend on them) maps a
synthetic zone written at the registry resolutions (S2 with 20 dates and cloud masks, S1 with 8),
once with plain tiling (overlap 0) and once with the default blending (overlap 0.25, ~1.8x the
tiles). Each run is the whole ``predict_zone`` path: threaded reading and preprocessing, batched
bf16 inference, blending, streamed writes and the COG conversion. The model alone (forward on a
synthetic batch already on the device) bounds what the pipeline can reach. Results print as a
markdown table and go to ``--json`` (default ``$OUT/predict_throughput.json`` when OUT is set).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine

from bench.pretrain_throughput import device_meta
from maestro.modalities import MODALITIES
from maestro.models import EncoderConfig
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import synthetic_batch, tiny_config
from predict.engine import PredictOptions, predict_zone, resolve_device
from predict.model import PredictModel, task_info

log = logging.getLogger("predict_throughput")
DATES = {"aerial": 1, "s2": 20, "s1_asc": 8, "s1_des": 8}
ORIGIN = (650_000.0, 6_860_000.0)


def build_model(smoke: bool, device: torch.device) -> PredictModel:
    encoder = tiny_config().encoder if smoke else EncoderConfig(size="medium")
    info = task_info("lc", 1, 15)
    config = SegmenterConfig(
        encoder=encoder,
        num_classes=15,
        label_size=32 if smoke else 512,
        decoder_channels=32 if smoke else 256,
    )
    network = MaestroSegmenter(config).to(device).eval()
    return PredictModel(network, config, info, f"random {'tiny' if smoke else 'medium'} segmenter")


def write_zone(root: Path, model: PredictModel, size_m: float, seed: int = 0) -> Path:
    """Inputs + cloud masks at the model's pixel sizes over ``size_m`` x ``size_m``, smooth noise."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for key in model.rasters():
        entry = MODALITIES[key]
        owner = entry.companion_of or key
        pixel = model.input_pixel_m(owner)
        side = math.ceil(size_m / pixel - 1e-6)
        count = entry.num_bands * DATES.get(owner, 1)
        coarse = rng.random((count, side // 8 + 2, side // 8 + 2), dtype=np.float32)
        values = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :side, :side]
        if entry.kind == "mask":
            values = np.where(values > 0.8, 100, 0)
        elif entry.dtype == "uint8":
            values = 30 + values * 200
        elif entry.dtype == "uint16":
            values = 200 + values * 3000
        else:
            values = 0.01 + values * (0.3 if entry.temporal else 300)
        profile = {
            "driver": "GTiff",
            "count": count,
            "width": side,
            "height": side,
            "dtype": entry.dtype,
            "crs": "EPSG:2154",
            "transform": Affine(pixel, 0, ORIGIN[0], 0, -pixel, ORIGIN[1]),
            "tiled": side >= 512,
            "compress": "deflate",
            "zlevel": 1,
        }
        with rasterio.open(root / f"{key}.tif", "w", **profile) as dst:
            dst.write(values.astype(entry.dtype))
        if entry.kind == "image" and entry.dates_table:
            dates = [
                int(f"2021{1 + (t * 11) // max(DATES[key], 1):02d}{1 + t % 28:02d}")
                for t in range(DATES[key])
            ]
            (root / f"{key}_dates.json").write_text(json.dumps(dates))
    return root


def model_only(model: PredictModel, batch_size: int, device: torch.device, repeats: int) -> float:
    """Tiles per second of the bare forward pass (bf16 autocast on GPU), inputs already on the device."""
    batch = synthetic_batch(model.config.encoder, batch_size=batch_size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for _ in range(2):
            model.network(batch["inputs"], batch["times"], batch["valid"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            model.network(batch["inputs"], batch["times"], batch["valid"])
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch_size * repeats / (time.perf_counter() - started)


def run(
    model: PredictModel, zone: Path, out: Path, overlap: float, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    options = PredictOptions(
        overlap=overlap, batch_size=args.batch_size, workers=args.workers, progress=False
    )
    summary = predict_zone(model, zone, out, options, device)
    return {
        "overlap": overlap,
        "tiles": summary.tiles,
        "seconds": summary.seconds,
        "area_km2": summary.area_km2,
        "km2_per_hour": summary.km2_per_hour,
        "tiles_per_s": summary.tiles / summary.seconds,
        "map_bytes": out.stat().st_size,
    }


def print_table(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print(f"\n## predict throughput — {meta['date']}")
    print(f"`{meta['command']}`  ")
    print(
        f"{meta.get('gpu', meta['device'])}, torch {meta['torch']}, {meta['cpus']} CPUs, {results['model']}, "
        f"zone {results['size_m']:g} m ({results['runs'][0]['area_km2']:.3f} km2), batch {results['batch_size']}, "
        f"{results['workers']} reader threads\n"
    )
    print("| overlap | tiles | seconds | tiles/s | km2/h |")
    print("|---|---|---|---|---|")
    for r in results["runs"]:
        print(
            f"| {r['overlap']:g} | {r['tiles']} | {r['seconds']:.1f} | {r['tiles_per_s']:.1f} | {r['km2_per_hour']:.1f} |"
        )
    bare = results["model_only_tiles_per_s"]
    print(f"| model only | - | - | {bare:.1f} | {bare * results['tile_km2'] * 3600:.1f} |")
    print(
        f"\nblending (overlap 0.25 vs 0): {results['blending_time_ratio']:.2f}x the time per km2, "
        f"{results['blending_tile_ratio']:.2f}x the tiles, {results['blending_per_tile_overhead']:+.1%} time per tile"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU-sized: tiny segmenter on a 51.2 m zone")
    parser.add_argument("--size-m", type=float, help="zone side in metres (default 1024, smoke 51.2)")
    parser.add_argument("--batch-size", type=int, help="tiles per batch (default 16, smoke 8)")
    parser.add_argument("--workers", type=int, help="reader threads (default: CPUs - 2, at most 12; smoke 2)")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--workdir", help="where the zone and maps are written (default: a temporary folder)")
    parser.add_argument("--json", help="results file (default $OUT/predict_throughput.json when OUT is set)")
    args = parser.parse_args(argv)
    args.size_m = args.size_m or (51.2 if args.smoke else 1024.0)
    args.batch_size = args.batch_size or (8 if args.smoke else 16)
    args.workers = args.workers or (2 if args.smoke else max(1, min(12, (os.cpu_count() or 4) - 2)))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.smoke, device)
    results: dict[str, Any] = {
        "meta": device_meta(device),
        "model": model.source,
        "size_m": args.size_m,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "tile_km2": model.footprint_m**2 / 1e6,
        "runs": [],
    }
    with TemporaryDirectory(prefix="predict-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        zone = write_zone(work / "zone", model, args.size_m)
        warmup = write_zone(work / "warmup", model, 2 * model.footprint_m, seed=1)
        log.info("synthetic zones written in %.1f s", time.perf_counter() - started)
        run(model, warmup, work / "warmup.tif", 0.0, args, device)
        for overlap in (0.0, 0.25):
            results["runs"].append(run(model, zone, work / f"map_{overlap}.tif", overlap, args, device))
    results["model_only_tiles_per_s"] = model_only(model, args.batch_size, device, 3 if args.smoke else 10)
    plain, blended = results["runs"]
    results["blending_time_ratio"] = blended["seconds"] / plain["seconds"]
    results["blending_tile_ratio"] = blended["tiles"] / plain["tiles"]
    results["blending_per_tile_overhead"] = (blended["seconds"] / blended["tiles"]) / (
        plain["seconds"] / plain["tiles"]
    ) - 1
    target = args.json or (
        Path(os.environ["OUT"]) / "predict_throughput.json" if os.environ.get("OUT") else None
    )
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(results, indent=2))
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
