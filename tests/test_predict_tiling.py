"""Tiling and blending of ``predict`` without a model: tile origins, chunks, the window, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from maestro.errors import ConfigError
from predict.blending import StripAccumulator
from predict.tiling import Grid, blend_window, chunk_columns, origins, plan_tiles, stride_for


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


def test_chunks_hold_every_tile_touching_their_columns() -> None:
    chunks = chunk_columns(1000, 64, 48, max_width=300, align=256)
    assert [(c.start, c.stop) for c in chunks] == [(0, 256), (256, 512), (512, 768), (768, 1000)]
    for chunk in chunks:
        assert all(col < chunk.stop and col + 64 > chunk.start for col in chunk.tile_cols)
        covered = np.zeros(1000, bool)
        for col in chunk.tile_cols:
            covered[col : col + 64] = True
        assert covered[chunk.start : chunk.stop].all()


def _grid(width: int, height: int) -> Grid:
    return Grid(Affine(0.2, 0, 0, 0, -0.2, 0), width, height, CRS.from_epsg(2154))


def _stream(tiles: list, grid: Grid, size: int, chunks: list, quantum: int, logits: dict) -> np.ndarray:
    """Run the accumulator like the engine does and paste the flushed strips into one array."""
    out = np.full((2, grid.height, grid.width), np.nan, dtype=np.float32)
    window = blend_window(size)
    accumulator, current = None, -1

    def paste(strip) -> None:
        if strip is not None:
            out[:, strip.row : strip.row + strip.height, strip.col : strip.col + strip.logits.shape[2]] = (
                strip.logits
            )

    for tile in tiles:
        if tile.chunk != current:
            if accumulator is not None:
                paste(accumulator.flush(grid.height, final=True))
            chunk = chunks[tile.chunk]
            accumulator, current = (
                StripAccumulator(2, chunk.start, chunk.stop, grid.height, size, quantum),
                tile.chunk,
            )
        paste(accumulator.flush(tile.row))
        accumulator.add(tile.row, tile.col, logits[tile.index] * window, window, np.zeros((size, size), bool))
    paste(accumulator.flush(grid.height, final=True))
    return out


def test_streamed_chunked_blending_equals_blending_everything_at_once() -> None:
    grid, size = _grid(150, 130), 32
    stride = stride_for(size, 0.25)
    rng = np.random.default_rng(0)
    whole = chunk_columns(grid.width, size, stride, 10_000, 16)
    tiles = plan_tiles(grid, size, stride, whole)
    logits = {t.index: rng.normal(size=(2, size, size)).astype(np.float32) for t in tiles}
    sums, weights, window = np.zeros((2, 130, 150)), np.zeros((130, 150)), blend_window(size)
    for t in tiles:
        sums[:, t.row : t.row + size, t.col : t.col + size] += logits[t.index] * window
        weights[t.row : t.row + size, t.col : t.col + size] += window
    expected = sums / weights
    np.testing.assert_allclose(_stream(tiles, grid, size, whole, 16, logits), expected, rtol=1e-5, atol=1e-5)
    narrow = chunk_columns(grid.width, size, stride, 40, 16)
    assert len(narrow) > 2
    streamed = _stream(plan_tiles(grid, size, stride, narrow), grid, size, narrow, 16, logits)
    np.testing.assert_allclose(streamed, expected, rtol=1e-5, atol=1e-5)


def test_blending_turns_a_step_between_tiles_into_a_smooth_ramp() -> None:
    """Tiles with constant but different logits: a hard step at overlap 0, a gentle ramp with overlap."""
    grid, size = _grid(128, 32), 32

    def max_jump(overlap: float) -> float:
        stride = stride_for(size, overlap)
        chunks = chunk_columns(grid.width, size, stride, 10_000, 16)
        tiles = plan_tiles(grid, size, stride, chunks)
        logits = {t.index: np.full((2, size, size), float(t.index[1] % 2) * 4.0, np.float32) for t in tiles}
        field = _stream(tiles, grid, size, chunks, 16, logits)[0]
        return float(np.abs(np.diff(field, axis=1)).max())

    assert max_jump(0.0) == pytest.approx(4.0)
    assert max_jump(0.5) < 1.0
