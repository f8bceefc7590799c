"""Large-area inference throughput: km2 per hour of ``predict``'s pipeline against the model alone.

    PYTHONPATH=. python bench/predict_throughput.py --smoke        # CPU, tiny segmenter, < 1 min
    PYTHONPATH=. python bench/predict_throughput.py                # medium segmenter, 10.24 km2, one GPU
    PYTHONPATH=. python bench/predict_throughput.py --compile      # the same, network compiled

A medium MAESTRO segmenter (uperfuse head, FLAIR-HUB default inputs: aerial, dem, s2, s1_asc,
s1_des; 102.4 m tiles of 512 x 512 labels; random weights, speed does not depend on them) maps a
synthetic zone written at the registry resolutions (S2 with 20 dates and cloud masks, S1 with 8),
in the same process: the model alone (forward passes on the zone's first batch as the loader
gives it, already on the device, at the pipeline's batch size), then plain tiling (overlap 0) and
the default blending (overlap 0.25, ~1.8x the tiles) through :class:`predict.engine.UnitMapper` --
loader worker processes, scaling on the device, bf16 inference, blending on the device, unit files
written and converted to COGs with overviews beside the mapping (``--plain-units``: left as
streamed) -- i.e. what ``predict --zones`` does per unit; the final mosaic is not timed (it is built
once per zone, off the device). A small zone is mapped first so that compilation and the first
out-of-memory halving are not counted; each run starts its own reader processes, as a ``predict``
process does once (about a second and a half on a 16-core host: a larger ``--size-m`` shows the
steady rate better). Per run: tiles/s as a fraction of the model's, km2/h, and from the units' own
timings the share of wall time the main loop waited for tiles and the share the device was busy.
Results print as a markdown table and go to ``--json`` (default ``$OUT/predict_throughput.json``
when OUT is set).
"""

from __future__ import annotations

import argparse
import contextlib
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
from rasterio.windows import Window

from bench.pretrain_throughput import device_meta
from maestro.data.preprocess import scale_batch
from maestro.modalities import MODALITIES
from maestro.models import EncoderConfig
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config
from predict.engine import PredictOptions, UnitJob, UnitMapper, UnitStats, resolve_device
from predict.loader import TileLoader
from predict.model import PredictModel, task_info
from predict.tiling import stride_for
from predict.units import plan_units, unit_tiles
from predict.zone import Zone, open_zone

log = logging.getLogger("predict_throughput")
DATES = {"aerial": 1, "s2": 20, "s1_asc": 8, "s1_des": 8}
ORIGIN = (650_000.0, 6_860_000.0)
ROWS = 2048
"""Rows of a raster generated and written at a time (memory stays at a few hundred MB)."""


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


def _values(entry: Any, rng: np.random.Generator, count: int, rows: int, width: int) -> np.ndarray:
    """Smooth-ish noise (constant over 8 x 8 pixels) in the modality's dtype and range."""
    coarse = rng.random((count, rows // 8 + 2, width // 8 + 2), dtype=np.float32)
    values = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :rows, :width]
    if entry.kind == "mask":
        values = np.where(values > 0.8, 100, 0)
    elif entry.dtype == "uint8":
        values = 30 + values * 200
    elif entry.dtype == "uint16":
        values = 200 + values * 3000
    else:
        values = 0.01 + values * (0.3 if entry.temporal else 300)
    return values.astype(entry.dtype)


def write_zone(root: Path, model: PredictModel, size_m: float, seed: int = 0) -> Path:
    """Inputs + cloud masks at the model's pixel sizes over ``size_m`` x ``size_m``: tiled DEFLATE
    GeoTIFFs, as zone rasters usually are, written ``ROWS`` rows at a time."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for key in model.rasters():
        entry = MODALITIES[key]
        owner = entry.companion_of or key
        pixel = model.input_pixel_m(owner)
        side = math.ceil(size_m / pixel - 1e-6)
        count = entry.num_bands * DATES.get(owner, 1)
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
            "num_threads": "all_cpus",
            "bigtiff": "if_safer",
        }
        with rasterio.open(root / f"{key}.tif", "w", **profile) as dst:
            for top in range(0, side, ROWS):
                rows = min(ROWS, side - top)
                dst.write(_values(entry, rng, count, rows, side), window=Window(0, top, side, rows))
        if entry.kind == "image" and entry.dates_table:
            dates = [
                int(f"2021{1 + (t * 11) // max(DATES[key], 1):02d}{1 + t % 28:02d}")
                for t in range(DATES[key])
            ]
            (root / f"{key}_dates.json").write_text(json.dumps(dates))
    return root


def _open(model: PredictModel, zone_dir: Path) -> Zone:
    pixels = {key: model.input_pixel_m(key) for key in model.specs}
    return open_zone(zone_dir, model.rasters(), pixels, model.label_pixel_m)


def model_only(mapper: UnitMapper, zone_dir: Path, device: torch.device, repeats: int) -> float:
    """Tiles per second of the bare forward pass (bf16 autocast on a GPU, the pipeline's network,
    compiled or not) on the zone's first batch, as the pipeline's loader gives it, already on the
    device and scaled."""
    model = mapper.model
    zone = _open(model, zone_dir)
    unit = plan_units(zone_dir.name, zone.grid, mapper.options.unit_px)[0]
    tiles = unit_tiles(zone.grid, model.tile_size, model.tile_size, unit)
    with TileLoader(
        [(zone, tiles)], mapper.sizes, mapper.preprocess, model.tile_size, mapper.split, 0
    ) as loader:
        first = next(iter(loader))
    batch = {part: {k: v.to(device) for k, v in values.items()} for part, values in first.batch.items()}
    if mapper.preprocess.scale_on_device:
        scale_batch(batch, mapper.preprocess)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        for _ in range(2):
            mapper.network(batch["inputs"], batch["times"], batch["valid"], padded=first.padded)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            mapper.network(batch["inputs"], batch["times"], batch["valid"], padded=first.padded)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return len(tiles[: mapper.split]) * repeats / (time.perf_counter() - started)


def map_zone(mapper: UnitMapper, zone_dir: Path, out: Path, overlap: float, unit_px: int) -> dict[str, Any]:
    """Every unit of the zone through ``mapper`` (one loader for all), timed from start to the last file."""
    model = mapper.model
    zone = _open(model, zone_dir)
    stride = stride_for(model.tile_size, overlap)
    units = plan_units(zone_dir.name, zone.grid, unit_px)
    jobs = [
        UnitJob(
            zone, unit, tuple(unit_tiles(zone.grid, model.tile_size, stride, unit)), out / f"{unit.name}.tif"
        )
        for unit in units
    ]
    done: list[UnitStats] = []
    mapper.tags["overlap"] = overlap
    started = time.perf_counter()
    mapper.run(jobs, on_done=done.append)
    seconds = time.perf_counter() - started
    tiles = sum(s.tiles for s in done)
    unit_seconds = sum(s.seconds for s in done)
    return {
        "overlap": overlap,
        "units": len(done),
        "tiles": tiles,
        "seconds": seconds,
        "area_km2": zone.grid.area_km2,
        "km2_per_hour": zone.grid.area_km2 / seconds * 3600.0,
        "tiles_per_s": tiles / seconds,
        "wait_fraction": sum(s.wait_seconds for s in done) / unit_seconds,
        "busy_fraction": sum(s.busy_seconds for s in done) / unit_seconds,
        "unit_bytes": sum(p.stat().st_size for p in out.iterdir()),
    }


def print_table(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print(f"\n## predict throughput — {meta['date']}")
    print(f"`{meta['command']}`  ")
    print(
        f"{meta.get('gpu', meta['device'])}, torch {meta['torch']}, {meta['cpus']} CPUs, {results['model']}, "
        f"zone {results['size_m']:g} m ({results['runs'][0]['area_km2']:.3f} km2), batch {results['batch_size']}, "
        f"{results['workers']} reader processes, units of {results['unit_px']} px"
        f"{', compiled' if results['compile'] else ''}\n"
    )
    bare = results["model_only_tiles_per_s"]
    print("| run | units | tiles | seconds | tiles/s | of model | km2/h | input wait | device busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(
            f"| overlap {r['overlap']:g} | {r['units']} | {r['tiles']} | {r['seconds']:.1f} | {r['tiles_per_s']:.1f} "
            f"| {r['tiles_per_s'] / bare:.0%} | {r['km2_per_hour']:,.0f} | {r['wait_fraction']:.0%} "
            f"| {r['busy_fraction']:.0%} |"
        )
    print(
        f"| model only | - | - | - | {bare:.1f} | 100% | {results['model_only_km2_per_hour']:,.0f} | - | - |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU-sized: tiny segmenter on a 57.6 m zone")
    parser.add_argument(
        "--size-m", type=float, help="zone side in metres (default 3200: 10.24 km2; smoke 76.8)"
    )
    parser.add_argument("--batch-size", type=int, help="tiles per batch (default: the pipeline's, auto)")
    parser.add_argument("--workers", type=int, help="reader processes (default: the pipeline's, auto)")
    parser.add_argument("--unit-px", type=int, help="unit side in output pixels (default 10240; smoke 256)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument(
        "--plain-units",
        action="store_true",
        help="unit files as streamed tiled GeoTIFFs (--zone) instead of COGs with overviews (--zones)",
    )
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--workdir", help="where the zone and maps are written (default: a temporary folder)")
    parser.add_argument("--json", help="results file (default $OUT/predict_throughput.json when OUT is set)")
    args = parser.parse_args(argv)
    args.size_m = args.size_m or (57.6 if args.smoke else 3200.0)
    args.unit_px = args.unit_px or (256 if args.smoke else 10240)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.smoke, device)
    options = PredictOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        unit_px=args.unit_px,
        compile=args.compile,
        progress=False,
    )
    mapper = UnitMapper(model, options, device, cog_units=not args.plain_units)
    results: dict[str, Any] = {
        "meta": device_meta(device),
        "model": model.source,
        "size_m": args.size_m,
        "batch_size": mapper.batch_size,
        "workers": mapper.workers,
        "unit_px": args.unit_px,
        "compile": args.compile,
        "cog_units": not args.plain_units,
        "tile_km2": model.footprint_m**2 / 1e6,
        "runs": [],
    }
    with TemporaryDirectory(prefix="predict-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        zone = write_zone(work / "zone", model, args.size_m)
        # the warm-up holds more tiles than a batch: a forward pass out of memory is met (and
        # the batch halved) there, and a compiled network sees the full shape
        warmup = write_zone(work / "warmup", model, (2 if args.smoke else 6) * model.footprint_m, seed=1)
        log.info("synthetic zones written in %.1f s", time.perf_counter() - started)
        map_zone(mapper, warmup, work / "warmup_units", 0.25, args.unit_px)
        results["model_only_tiles_per_s"] = model_only(mapper, zone, device, 3 if args.smoke else 20)
        for overlap in (0.0, 0.25):
            out = work / f"units_{overlap}"
            results["runs"].append(map_zone(mapper, zone, out, overlap, args.unit_px))
    results["batch_size_used"] = mapper.split
    results["model_only_km2_per_hour"] = results["model_only_tiles_per_s"] * results["tile_km2"] * 3600
    plain, blended = results["runs"]
    results["blending_time_ratio"] = blended["seconds"] / plain["seconds"]
    results["blending_tile_ratio"] = blended["tiles"] / plain["tiles"]
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
