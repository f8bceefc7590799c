"""A toy zone: a few hundred metres of simulated landscape in the layout ``predict`` reads.

The zone is a grid of toy patches (:mod:`maestro.data.toy.scene` and :mod:`.render`, unchanged)
mosaicked into one raster per registry modality, ``{key}.tif`` at the registry's resolution, plus
``{key}_dates.json`` for every image with a date table. All patches share the zone's acquisition
dates and phenology shift, as one satellite pass would, and the terrain is continuous; land cover
is drawn per patch, so it changes at patch borders (a toy, not a landscape model). Labels
(``lc.tif``, ``lpis.tif``) are written too, to compare a map against. Fine rasters are cropped to
the requested size; coarse ones keep whole pixels, overhanging by less than one pixel.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from maestro.data.layout import CRS, PATCH_SIZE_M, PatchId
from maestro.data.toy.acquisitions import ACQUISITIONS, draw_dates, to_yyyymmdd
from maestro.data.toy.plan import PatchPlan
from maestro.data.toy.render import PRODUCTS, Renderer, Terrain
from maestro.data.toy.scene import build_scene
from maestro.data.toy.writing import check_inside, prepare_output
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, Modality

log = logging.getLogger(__name__)

_FLAIR_HUB: dict[str, Modality] = {key: MODALITIES[key] for key in PRODUCTS}
"""The FLAIR-HUB modalities: a toy zone holds one raster of each."""

ZONE_ORIGIN = (8000 * PATCH_SIZE_M, 64000 * PATCH_SIZE_M)
"""(left, top) of toy zones in Lambert-93 metres, on the FLAIR-HUB patch grid."""
ZONE_YEAR = 2021
MAX_SIZE_M = 5000.0


@dataclass(frozen=True)
class ToyZoneSummary:
    root: Path
    size_m: float
    seed: int
    patches: int
    rasters: dict[str, tuple[int, int, int]]
    """key -> (width, height, bands)."""
    dates: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        lines = [
            f"toy zone at {self.root} (seed {self.seed}): {self.size_m:g} m square, {self.patches} simulated "
            f"patches, written in {self.seconds:.1f} s"
        ]
        lines += [
            f"  {key + '.tif':16s} {w:5d} x {h:5d} px, {bands:3d} bands"
            + (f", {self.dates[key]} dates" if key in self.dates else "")
            for key, (w, h, bands) in self.rasters.items()
        ]
        return "\n".join(lines)


def _pixels(modality: Modality, size_m: float) -> int:
    """Raster side: the requested size in whole pixels (coarse rasters round up)."""
    return max(1, math.ceil(size_m / modality.pixel_size_m - 1e-6))


def _open(root: Path, modality: Modality, size_m: float, num_dates: int) -> rasterio.io.DatasetWriter:
    side = _pixels(modality, size_m)
    pixel = modality.pixel_size_m
    block = modality.size_px if modality.size_px % 16 == 0 else 256
    floating = np.issubdtype(np.dtype(modality.dtype), np.floating)
    profile = {
        "driver": "GTiff",
        "dtype": modality.dtype,
        "count": modality.num_bands * num_dates,
        "width": side,
        "height": side,
        "crs": CRS,
        "transform": Affine(pixel, 0.0, ZONE_ORIGIN[0], 0.0, -pixel, ZONE_ORIGIN[1]),
        "compress": "deflate",
        "predictor": 3 if floating else 2,
        "tiled": side > block,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "band",
        "alpha": "unspecified",  # GDAL would make band 4 of a 4-band uint8 (aerial NIR) an alpha mask
    }
    dataset = rasterio.open(check_inside(root, Path(f"{modality.key}.tif")), "w", **profile)
    names = (
        modality.bands
        if not modality.temporal
        else [f"{b}_t{t}" for t in range(num_dates) for b in modality.bands]
    )
    dataset.descriptions = tuple(names)
    return dataset


def _paste(dataset: rasterio.io.DatasetWriter, array: np.ndarray, row: int, col: int) -> None:
    """Write one patch's (bands, s, s) raster at patch (row, col), cropped to the raster."""
    side = array.shape[-1]
    top, left = row * side, col * side
    height, width = min(side, dataset.height - top), min(side, dataset.width - left)
    if height > 0 and width > 0:
        dataset.write(array[:, :height, :width], window=Window(left, top, width, height))


def write_toy_zone(out: Path, size_m: float = 400.0, seed: int = 0) -> ToyZoneSummary:
    """Write a ``size_m`` square toy zone into ``out`` (absent or empty; nothing is written outside it)."""
    if not 0 < size_m <= MAX_SIZE_M:
        raise ConfigError(f"--size-m must be in (0, {MAX_SIZE_M:g}] for a toy zone, got {size_m:g}")
    started = time.perf_counter()
    root = prepare_output(Path(out))
    per_side = math.ceil(size_m / PATCH_SIZE_M - 1e-9)
    rng = np.random.default_rng((seed, 2))
    tables = dict.fromkeys(m.dates_table for m in _FLAIR_HUB.values() if m.dates_table)
    doys = {table: draw_dates(rng, ZONE_YEAR, ACQUISITIONS[table]) for table in tables}
    shift = float(rng.normal(0.0, 4.0))
    terrain = Terrain.draw(np.random.default_rng((seed, 1, 0)))
    counts = {key: len(doys[m.dates_table]) if m.temporal else 1 for key, m in _FLAIR_HUB.items()}
    log.info("simulating a %g m toy zone: %d x %d patches (seed %d)", size_m, per_side, per_side, seed)
    datasets = {key: _open(root, m, size_m, counts[key]) for key, m in _FLAIR_HUB.items()}
    try:
        for index in range(per_side * per_side):
            row, col = divmod(index, per_side)
            origin = (ZONE_ORIGIN[0] + col * PATCH_SIZE_M, ZONE_ORIGIN[1] - row * PATCH_SIZE_M)
            plan = PatchPlan(
                index, PatchId(f"D001-{ZONE_YEAR}", "ZONE-00", row, col), "test", 0, ZONE_YEAR, origin
            )
            patch_rng = np.random.default_rng((seed, 0, index))
            renderer = Renderer(build_scene(plan, patch_rng), terrain, doys, regional_shift=shift)
            for key, product in PRODUCTS.items():
                array = np.asarray(product(renderer))
                _paste(
                    datasets[key],
                    array.reshape(-1, *array.shape[-2:]).astype(MODALITIES[key].dtype),
                    row,
                    col,
                )
    finally:
        for dataset in datasets.values():
            dataset.close()
    dates = {}
    for key, modality in _FLAIR_HUB.items():
        if modality.dates_table and modality.kind == "image":
            values = [int(d) for d in to_yyyymmdd(ZONE_YEAR, doys[modality.dates_table])]
            check_inside(root, Path(f"{key}_dates.json")).write_text(json.dumps(values) + "\n")
            dates[key] = len(values)
    rasters = {
        key: (_pixels(m, size_m), _pixels(m, size_m), m.num_bands * counts[key])
        for key, m in _FLAIR_HUB.items()
    }
    summary = ToyZoneSummary(
        root, size_m, seed, per_side * per_side, rasters, dates, time.perf_counter() - started
    )
    log.info("%s", summary)
    return summary
