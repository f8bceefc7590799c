"""``predict --reconstruct s2``: a zone's Sentinel-2 series with its cloudy pixels restored.

The model is a cloud-removal network (a ``gapfill`` run or its published folder,
:mod:`maestro.models.gapfill`). The zone is read as for mapping (:mod:`predict.zone`), in tiles
of the model's footprint on the Sentinel-2 raster's own grid, overlapping by half and blended
with the mapping's window (:func:`predict.tiling.blend_window`). Each tile keeps *every* date of
the series: the prior (linear interpolation between clear dates) is computed over the whole
series, and the network, which reads ``num_dates`` dates at a time, restores the cloudy dates of
each run of that many consecutive dates, seeing the same tile's other sensors whole.

Output, on the input's grid, band order and data type: ``OUT`` holds the ``T x C`` restored bands
(date-major, as the input) followed by ``T`` bands "reconstructed" (1 where a pixel was restored,
0 where it is the input's value, bit for bit), and ``{OUT stem}_dates.json`` the dates. Rows are
written as soon as no later tile reaches them (:mod:`predict.reconstruct_writer`): memory holds
one row of tiles, not the zone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from einops import rearrange
from tqdm import tqdm

from maestro.api_gapfill import gapfill_preprocessing
from maestro.data.collate import collate_model_samples
from maestro.errors import ConfigError
from maestro.hub.pretrained import build
from maestro.hub.weights import Pick
from maestro.modalities import MODALITIES, with_companions
from maestro.models.gapfill import MaestroGapFill, restore_batch
from maestro.models.registry import MAESTRO_GAPFILL
from maestro.models.zoo import load_weights
from predict.options import MODEL_SOURCES
from predict.reading import TileReader
from predict.reconstruct_writer import ROWS_PER_STRIP, RestoredWriter
from predict.tiling import Grid, Tile, blend_window, origins
from predict.zone import open_zone, read_dates

log = logging.getLogger("predict")


def load_gapfill(spec: str, pick: Pick = "ema", device: str | torch.device = "cpu") -> MaestroGapFill:
    """The cloud-removal network ``spec`` names, in eval mode on ``device``; another model type is
    a ConfigError saying what ``--reconstruct`` needs."""
    weights = load_weights(spec, None, pick, kinds=MODEL_SOURCES, user="--model")
    if weights.model_type is not MAESTRO_GAPFILL:
        raise ConfigError(
            f"--reconstruct needs a cloud-removal model (a gapfill run or its published folder); {spec} "
            f"is a {weights.model_type.name}"
        )
    model = build(weights, weights.source)
    log.info("model: %s (restores %s)", weights.note, model.config.target)
    return model.to(device)


def _target_grid(zone, key: str) -> Grid:
    raster = zone.rasters[key]
    return Grid(raster.transform, raster.width, raster.height, zone.crs)


def reconstruct_zone(
    model: MaestroGapFill,
    root: Path,
    out: Path,
    batch_size: int = 16,
    progress: bool = True,
    rows_per_strip: int = ROWS_PER_STRIP,
) -> Path:
    """Restore the cloudy pixels of the zone's target series and write ``out`` (module docstring),
    on the model's device."""
    config = model.config
    key = config.target
    specs = model.mae.specs
    footprint = specs[key].image_size * MODALITIES[key].pixel_size_m
    pixel_m = {k: footprint / spec.image_size for k, spec in specs.items()}
    zone = open_zone(root, with_companions(list(specs)), pixel_m, MODALITIES[key].pixel_size_m)
    zone = dataclasses.replace(zone, grid=_target_grid(zone, key))
    preprocess = gapfill_preprocessing(config, whole_series=True)
    size, grid = specs[key].image_size, zone.grid
    stride = max(1, size // 2)
    rows, cols = origins(grid.height, size, stride), origins(grid.width, size, stride)
    scale = MODALITIES[key].scaling.factor
    sizes = {k: specs[MODALITIES[k].companion_of or k].image_size for k in zone.rasters}
    num_bands = MODALITIES[key].num_bands
    order = np.argsort(zone.rasters[key].dates, kind="stable")  # tiles hold the series in date order
    bands_in_raster_order, dates_in_raster_order = _date_major(order, num_bands), np.argsort(order)
    started = time.monotonic()
    reader = TileReader(zone, sizes, preprocess, size)
    bar = tqdm(total=len(rows) * len(cols), unit="tile", disable=not progress, desc=f"restoring {key}")
    try:
        with (
            rasterio.open(zone.rasters[key].path) as source,
            RestoredWriter(out, source, key, size, blend_window(size), rows_per_strip) as writer,
        ):
            for i, row in enumerate(rows):
                tiles = [Tile(row, col, (i, j)) for j, col in enumerate(cols)]
                for start in range(0, len(tiles), batch_size):
                    group = tiles[start : start + batch_size]
                    batch = collate_model_samples([reader.read(tile).sample for tile in group])
                    restored, flags = restore_batch(model, batch)
                    restored = rearrange(restored.cpu().double() * scale, "b t c h w -> b (t c) h w").numpy()
                    for tile, values, flagged in zip(group, restored, flags.cpu().numpy(), strict=True):
                        writer.add(
                            tile.row, tile.col, values[bands_in_raster_order], flagged[dates_in_raster_order]
                        )
                    bar.update(len(group))
                writer.finish_row(rows[i + 1] if i + 1 < len(rows) else None)
            restored_share = writer.restored_pixels / max(1, writer.num_dates * grid.height * grid.width)
    finally:
        bar.close()
        reader.close()
    _write_dates(out, read_dates(root, key))
    log.info(
        "wrote %s: %d dates, %.2f %% of the pixels restored, %d tiles in %.1f s",
        out, len(order), 100 * restored_share, len(rows) * len(cols), time.monotonic() - started,
    )  # fmt: skip
    return out


def _date_major(order: np.ndarray, num_bands: int) -> np.ndarray:
    """Band indices taking a chronological ``(t c)`` stack back to the raster's date order."""
    position = np.argsort(order)
    return np.array([position[t] * num_bands + c for t in range(len(order)) for c in range(num_bands)])


def _write_dates(out: Path, dates: np.ndarray) -> None:
    path = out.with_name(f"{out.stem}_dates.json")
    path.write_text(json.dumps([int(d) for d in dates]) + "\n")
