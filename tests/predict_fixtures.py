"""Tiny segmenters and synthetic zones for the ``predict`` tests (CPU, a few tiles, no training).

The tiny model reads 32 px tiles: labels and aerial/dem at 0.2 m (6.4 m footprint), Sentinel
inputs at 4 px, i.e. 1.6 m pixels. Zones are written at exactly those resolutions so that tiles
read every raster on its own pixel grid, as a full-size model does with FLAIR-HUB resolutions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from maestro.hub.folder import write_model_folder
from maestro.modalities import MODALITIES
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config
from maestro.tasks import get_task

TILE = 32
LABEL_PIXEL = MODALITIES["lc"].pixel_size_m
FOOTPRINT = TILE * LABEL_PIXEL
ORIGIN = (700_000.0, 6_600_000.0)
DATES = {
    "aerial": [20210615],
    "s2": [20210110, 20210304, 20210420, 20210611, 20210725, 20210903],
    "s1_asc": [20210201, 20210505, 20210808],
    "s1_des": [20210303, 20210606, 20210909],
}


def tiny_segmenter(seed: int = 0) -> MaestroSegmenter:
    torch.manual_seed(seed)
    config = SegmenterConfig(
        encoder=tiny_config().encoder,
        num_classes=get_task("lc").target(1).num_classes,
        label_size=TILE,
        decoder_channels=32,
    )
    return MaestroSegmenter(config).eval()


def write_tiny_model(folder: Path, seed: int = 0) -> tuple[Path, MaestroSegmenter]:
    model = tiny_segmenter(seed)
    target = get_task("lc").target(1)
    task = {"name": "lc", "level": 1, "class_names": list(target.names[: target.num_classes])}
    write_model_folder(folder, "maestro-segmenter", model.config.to_dict(), model.state_dict(), task=task)
    return folder, model


def _field(rng: np.random.Generator, bands: int, size: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth random images: a few sinusoids in ground coordinates per band."""
    height, width = size
    y, x = np.meshgrid(np.arange(height) * scale, np.arange(width) * scale, indexing="ij")
    out = np.zeros((bands, height, width), dtype=np.float64)
    for band in range(bands):
        for _ in range(3):
            fy, fx, phase = rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2), rng.uniform(0, 2 * math.pi)
            out[band] += np.sin(fy * y + fx * x + phase)
    return out / 3.0 + rng.normal(0, 0.05, out.shape)


def _values(
    key: str, rng: np.random.Generator, count: int, size: tuple[int, int], pixel: float
) -> np.ndarray:
    field = _field(rng, count, size, pixel)
    if key == "aerial":
        return np.clip(128 + 60 * field, 1, 254).astype(np.uint8)
    if key == "dem":
        return (200 + 5 * field).astype(np.float32)
    if key == "s2":
        return np.clip(1500 + 800 * field, 1, 10000).astype(np.uint16)
    if key == "s2_mask":
        return np.where(field > 0.3, 100, 0).astype(np.uint16)
    return np.exp(-2.5 + field).astype(np.float32)  # Sentinel-1 sigma0


def write_raster(
    path: Path,
    values: np.ndarray,
    transform: Affine,
    crs: str = "EPSG:2154",
    nodata: float | None = None,
    tiled: bool = False,
) -> None:
    profile = {
        "driver": "GTiff",
        "count": values.shape[0],
        "height": values.shape[1],
        "width": values.shape[2],
        "dtype": values.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values)


def write_zone(
    root: Path,
    tiles: tuple[int, int] = (4, 3),
    seed: int = 0,
    keys: tuple[str, ...] | None = None,
    shrink: Mapping[str, int] | None = None,
) -> Path:
    """A zone of ``tiles`` (columns, rows) tiny-model footprints; ``shrink`` drops pixels off the
    right of some rasters (to make bounds disagree)."""
    root.mkdir(parents=True, exist_ok=True)
    encoder = tiny_config().encoder
    keys = keys or (*encoder.modalities, "s2_mask")
    rng = np.random.default_rng(seed)
    for key in keys:
        entry = MODALITIES[key]
        image_size = encoder.specs[entry.companion_of or key].image_size
        pixel = FOOTPRINT / image_size
        width = tiles[0] * image_size - (shrink or {}).get(key, 0)
        height = tiles[1] * image_size
        dates = DATES.get(entry.companion_of or key)
        count = entry.num_bands * (len(dates) if entry.temporal else 1)
        transform = Affine(pixel, 0, ORIGIN[0], 0, -pixel, ORIGIN[1])
        write_raster(root / f"{key}.tif", _values(key, rng, count, (height, width), pixel), transform)
        if dates is not None and entry.kind == "image":
            (root / f"{key}_dates.json").write_text(json.dumps([str(d) for d in dates]))
    return root
