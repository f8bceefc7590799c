"""One tile -> a model sample, through the training preprocessing, plus where its inputs were nodata.

Every raster is read from the same ground footprint at its own resolution. When the raster's
pixel is the one the model reads (default sizes), the window is snapped to the raster's own pixel
grid (at most half a pixel off the footprint; exact whenever the tile origin lies on that grid, as
at overlap 0), so no value is ever resampled; otherwise rasterio resamples the window (nearest).
Windows reaching outside a raster are read from their inside part and padded (much faster than
rasterio's boundless reads). The tile is then assembled as a raw sample (:mod:`maestro.sample`)
and preprocessed exactly as in evaluation: band order, scaling, per-tile date selection with cloud
avoidance, padding.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from einops import rearrange
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from maestro.data.preprocess import PreprocessConfig, preprocess_sample
from maestro.errors import DataError
from maestro.modalities import MODALITIES
from maestro.sample import DATES, META, Sample
from predict.tiling import Grid, Tile
from predict.zone import Zone, ZoneRaster, open_in, warp_alpha

try:  # GDAL errors surfaced outside RasterioError (as in maestro.data.flairhub)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - private module moved
    CPLE_BaseError = RasterioError

_EPS = 1e-6
_READ_ERRORS = (RasterioError, CPLE_BaseError, OSError)


@dataclass(frozen=True)
class TileData:
    tile: Tile
    sample: Sample
    """The model sample (inputs, times, valid, meta)."""
    invalid: np.ndarray
    """(L, L) bool at output pixels: some input was nodata or outside the zone."""


@dataclass(frozen=True)
class SourceWindow:
    """A footprint in a raster's pixel coordinates: the window to read and where the footprint lies."""

    row: float
    col: float
    height: float
    width: float
    footprint: tuple[float, float, float, float]
    """Unsnapped (row, col, height, width) of the footprint itself."""


def _snap(value: float) -> float:
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < _EPS else value


def source_window(raster: ZoneRaster, bounds: tuple[float, float, float, float], size: int) -> SourceWindow:
    """The window of ``raster`` covering ``bounds``, read as ``size`` x ``size`` pixels."""
    left, bottom, right, top = bounds
    inverse = ~raster.transform
    col0, row0 = (_snap(v) for v in inverse @ (left, top))
    col1, row1 = (_snap(v) for v in inverse @ (right, bottom))
    height, width = row1 - row0, col1 - col0
    row, col = row0, col0
    if abs(height - size) < _EPS and abs(width - size) < _EPS:  # native resolution: snap to its grid
        row, col, height, width = math.floor(row0 + 0.5), math.floor(col0 + 0.5), size, size
    return SourceWindow(row, col, height, width, (row0, col0, height, width))


def _inside(offset: float, extent: float, size: int, length: int) -> tuple[int, int]:
    """Output pixels [i0, i1) whose centres fall inside the raster's [0, length) along one axis."""
    step = extent / size
    first = math.ceil(-offset / step - 0.5 - _EPS)
    last = math.ceil((length - offset) / step - 0.5 - _EPS)
    return max(0, first), min(size, last)


class _Source:
    """One open raster and how its nodata is known: a declared value, a per-dataset mask band, or none.

    An alpha band is not a mask: GDAL marks band 4 of a 4-band uint8 TIFF as alpha by default, and
    there it is NIR, a data band. A declared nodata value marks a pixel only when every band holds
    it (GDAL's convention is per band, so a dark pixel whose blue is 0 stays data); a non-finite
    value in any band of a float raster always marks it, since the network cannot read one. A
    raster warped from another CRS also brings the warp's alpha (:func:`predict.zone.warp_alpha`,
    read with the data), 0 outside its footprint, where the warp's values are zeros, not data.
    """

    def __init__(self, raster: ZoneRaster, dataset: Any):
        self.raster, self.dataset = raster, dataset
        first = dataset.mask_flag_enums[0]
        self.mask_band = MaskFlags.per_dataset in first and MaskFlags.alpha not in first
        self.alpha = warp_alpha(dataset)
        self.nodata = dataset.src_dataset.nodata if self.alpha is not None else dataset.nodata
        self.floating = np.issubdtype(np.dtype(raster.dtype), np.floating)

    def read(self, window: SourceWindow, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(count, size, size) values (0 where invalid) and (size, size) validity."""
        raster = self.raster
        values = np.zeros((raster.count, size, size), dtype=raster.dtype)
        valid = np.zeros((size, size), dtype=bool)
        i0, i1 = _inside(window.row, window.height, size, raster.height)
        j0, j1 = _inside(window.col, window.width, size, raster.width)
        if i0 >= i1 or j0 >= j1:
            return values, valid
        sy, sx = window.height / size, window.width / size
        inner = Window(window.col + j0 * sx, window.row + i0 * sy, (j1 - j0) * sx, (i1 - i0) * sy)
        shape = (raster.count + (self.alpha is not None), i1 - i0, j1 - j0)
        native = abs(sx - 1) < _EPS and abs(sy - 1) < _EPS
        options = {} if native else {"out_shape": shape, "resampling": Resampling.nearest}
        try:
            part = self.dataset.read(window=inner, **options)
            ok = np.ones(shape[1:], dtype=bool)
            if self.alpha is not None:
                ok &= part[-1] > 0
                part = part[:-1]
            if self.nodata is not None:
                hole = np.isnan(part) if math.isnan(self.nodata) else part == self.nodata
                ok &= ~hole.all(axis=0)
            if self.mask_band:
                options = {} if native else {"out_shape": shape[1:], "resampling": Resampling.nearest}
                ok &= self.dataset.read_masks(1, window=inner, **options) > 0
        except _READ_ERRORS as error:
            detail = f" ({error.__cause__})" if error.__cause__ is not None else ""
            where = f"cols {inner.col_off:g}+{inner.width:g}, rows {inner.row_off:g}+{inner.height:g}"
            raise DataError(
                f"{raster.key}: reading {where} failed: {error}{detail}", path=raster.path
            ) from error
        if self.floating:
            ok &= np.isfinite(part).all(axis=0)
        if not ok.all():  # the usual case, all valid, costs one pass over the mask
            part[:, ~ok] = 0
        if (i0, i1, j0, j1) == (0, size, 0, size):  # wholly inside: no padding to copy into
            return part, ok
        values[:, i0:i1, j0:j1] = part
        valid[i0:i1, j0:j1] = ok
        return values, valid


def _label_index(
    window: SourceWindow, read_extent: float, read_offset: float, size: int, tile_size: int, axis: int
) -> np.ndarray:
    """Index into the read array of each output pixel's centre, from its true ground position."""
    offset, extent = window.footprint[axis], window.footprint[axis + 2]
    centres = offset + (np.arange(tile_size) + 0.5) * extent / tile_size
    return np.clip(np.floor((centres - read_offset) / (read_extent / size)), 0, size - 1).astype(np.intp)


class TileReader:
    """Reads tiles of a zone; holds its own raster handles (one reader per thread)."""

    def __init__(self, zone: Zone, sizes: dict[str, int], preprocess: PreprocessConfig, tile_size: int):
        self.zone, self.grid, self.sizes = zone, zone.grid, sizes
        self.preprocess, self.tile_size = preprocess, tile_size
        self.inputs = set(preprocess.modalities)
        self._stack = contextlib.ExitStack()
        self.sources = {
            key: _Source(raster, self._stack.enter_context(open_in(raster.path, zone.crs)))
            for key, raster in zone.rasters.items()
        }

    def close(self) -> None:
        self._stack.close()

    def read(self, tile: Tile) -> TileData:
        size = self.tile_size
        grid: Grid = self.grid
        bounds = grid.window_bounds(tile.row, tile.col, size, size)
        raw: Sample = {}
        dates: dict[str, np.ndarray] = {}
        invalid = np.zeros((size, size), dtype=bool)
        for key, source in self.sources.items():
            entry, pixels = MODALITIES[key], self.sizes[key]
            window = source_window(source.raster, bounds, pixels)
            values, valid = source.read(window, pixels)
            if key in self.inputs and not valid.all():  # mapping the holes to output pixels
                rows = _label_index(window, window.height, window.row, pixels, size, 0)
                cols = _label_index(window, window.width, window.col, pixels, size, 1)
                invalid |= ~valid[np.ix_(rows, cols)]
            elif entry.kind == "mask":  # unknown sky counts as flagged: such dates are avoided
                values[:, ~valid] = entry.extra.get("max_value", np.iinfo(values.dtype).max)
            raw[key] = (
                rearrange(values, "(t c) h w -> t c h w", c=entry.num_bands) if entry.temporal else values
            )
            if source.raster.dates is not None and entry.kind == "image":
                dates[key] = source.raster.dates
        raw[DATES] = dates
        raw[META] = {
            "patch_id": tile.name(size),
            "rasters": {key: {"path": str(source.raster.path)} for key, source in self.sources.items()},
        }
        return TileData(tile, preprocess_sample(raw, self.preprocess, train=False), invalid)
