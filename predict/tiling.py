"""Where the model's footprint is laid over the output grid: tiles and the blending window.

Tiles are ``size`` x ``size`` output pixels (the label size), one every ``stride`` pixels; the
last tile of a row or column is moved back so that it ends on the zone's edge (no tile reads
mostly outside the zone). The tile grid is the zone's, whatever piece of it is mapped
(:mod:`predict.units` picks a unit's tiles from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from maestro.errors import ConfigError


@dataclass(frozen=True)
class Grid:
    """The output raster: north-up pixels of the label size, in the zone's CRS."""

    transform: Affine
    width: int
    height: int
    crs: CRS

    @property
    def pixel_size(self) -> float:
        return float(self.transform.a)

    @property
    def area_km2(self) -> float:
        return self.width * self.height * self.pixel_size**2 / 1e6

    def window_bounds(self, row: int, col: int, height: int, width: int) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a pixel window in the grid's CRS."""
        left, top = self.transform @ (col, row)
        right, bottom = self.transform @ (col + width, row + height)
        return left, bottom, right, top


@dataclass(frozen=True)
class Tile:
    """One model footprint: its top-left output pixel and its place in the tile grid."""

    row: int
    col: int
    index: tuple[int, int]
    """(tile row, tile column) for messages."""

    def name(self, size: int) -> str:
        return (
            f"tile r{self.index[0]} c{self.index[1]} (rows {self.row}-{self.row + size - 1}, "
            f"cols {self.col}-{self.col + size - 1})"
        )


def stride_for(size: int, overlap: float) -> int:
    """Pixels between tile origins for an overlap fraction in [0, 1)."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {overlap}")
    return max(1, round(size * (1.0 - overlap)))


def origins(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last one ending on the edge."""
    if length <= size:
        return [0]
    last = length - size
    out = list(range(0, last, stride))
    out.append(last)
    return out


def blend_window(size: int) -> np.ndarray:
    """(size, size) Hann weights, sin^2 at pixel centres: smooth, largest in the middle, never zero.

    Weights fall to almost nothing at a tile's border, where its context is poorest, so the tile
    next to it takes over continuously and no seam remains; being positive everywhere, a pixel
    seen by a single tile (at the zone's edge) keeps that tile's logits exactly.
    """
    ramp = np.sin(math.pi * (np.arange(size, dtype=np.float64) + 0.5) / size) ** 2
    return np.outer(ramp, ramp).astype(np.float32)
