"""Tiling and blending of ``predict`` without a model: tile origins, the window, streaming by units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from maestro.errors import ConfigError
from predict.blending import StripAccumulator
from predict.tiling import Grid, blend_window, origins, stride_for
from predict.units import Unit, unit_tiles


def test_origins_cover_the_axis_and_the_last_tile_ends_on_the_edge() -> None:
    assert origins(100, 32, 32) == [0, 32, 64, 68]
    assert origins(128, 32, 32) == [0, 32, 64, 96]
    assert origins(20, 32, 24) == [0]
    assert stride_for(512, 0.25) == 384 and stride_for(32, 0.0) == 32
    with pytest.raises(ConfigError, match="overlap"):
        stride_for(32, 1.0)


def test_blend_window_is_smooth_positive_and_peaks_in_the_middle() -> None:
    window = blend_window(32)
    assert window.shape == (32, 32) and (window > 0).all()
    np.testing.assert_allclose(window, window.T)
    np.testing.assert_allclose(window, window[::-1, ::-1])
    assert window[15, 15] == window.max() and window[0, 0] < 1e-4


def _grid(width: int, height: int) -> Grid:
    return Grid(Affine(0.2, 0, 0, 0, -0.2, 0), width, height, CRS.from_epsg(2154))


def _units(grid: Grid, side: int) -> list[Unit]:
    return [
        Unit("z", row, col, min(side, grid.height - row), min(side, grid.width - col))
        for row in range(0, grid.height, side)
        for col in range(0, grid.width, side)
    ]


def _stream(grid: Grid, size: int, stride: int, units: list[Unit], quantum: int, logits: dict) -> np.ndarray:
    """Run the accumulator like the engine does, unit by unit, and paste the flushed strips."""
    out = np.full((2, grid.height, grid.width), np.nan, dtype=np.float32)
    window = torch.from_numpy(blend_window(size))

    def paste(strip) -> None:
        if strip is not None:
            rows = slice(strip.row, strip.row + strip.height)
            out[:, rows, strip.col : strip.col + strip.logits.shape[2]] = strip.logits.numpy()

    for unit in units:
        accumulator = StripAccumulator(
            2, (unit.row, unit.row + unit.height), (unit.col, unit.col + unit.width), size, quantum
        )
        assert accumulator.nbytes <= (2 + 2) * 4 * (size + quantum) * unit.width  # not the zone's size
        for tile in unit_tiles(grid, size, stride, unit):
            paste(accumulator.flush(tile.row))
            weighted = torch.from_numpy(logits[tile.index])[None] * window
            stacked = StripAccumulator.stack(weighted, window, torch.zeros((1, size, size), dtype=torch.bool))
            accumulator.add(tile.row, tile.col, stacked[0])
        paste(accumulator.flush(unit.row + unit.height, final=True))
        accumulator.check()
    return out


def test_streamed_blending_equals_blending_everything_at_once_and_units_are_seamless() -> None:
    grid, size = _grid(150, 130), 32
    stride = stride_for(size, 0.25)
    rng = np.random.default_rng(0)
    rows, cols = origins(grid.height, size, stride), origins(grid.width, size, stride)
    logits = {
        (r, c): rng.normal(size=(2, size, size)).astype(np.float32)
        for r in range(len(rows))
        for c in range(len(cols))
    }
    sums, weights, window = np.zeros((2, 130, 150)), np.zeros((130, 150)), blend_window(size)
    for (r, c), value in logits.items():
        sums[:, rows[r] : rows[r] + size, cols[c] : cols[c] + size] += value * window
        weights[rows[r] : rows[r] + size, cols[c] : cols[c] + size] += window
    whole = _stream(grid, size, stride, _units(grid, 1000), 16, logits)
    np.testing.assert_allclose(whole, sums / weights, rtol=1e-5, atol=1e-5)
    small = _units(grid, 48)  # unit edges cut through tiles in both directions
    assert len(small) == 12
    np.testing.assert_array_equal(_stream(grid, size, stride, small, 16, logits), whole)  # bit for bit


def test_blending_turns_a_step_between_tiles_into_a_smooth_ramp() -> None:
    """Tiles with constant but different logits: a hard step at overlap 0, a gentle ramp with overlap."""
    grid, size = _grid(128, 32), 32

    def max_jump(overlap: float) -> float:
        stride = stride_for(size, overlap)
        cols = origins(grid.width, size, stride)
        logits = {(0, c): np.full((2, size, size), float(c % 2) * 4.0, np.float32) for c in range(len(cols))}
        field = _stream(grid, size, stride, _units(grid, 1000), 16, logits)[0]
        return float(np.abs(np.diff(field, axis=1)).max())

    assert max_jump(0.0) == pytest.approx(4.0)
    assert max_jump(0.5) < 1.0
