"""predict.reconstruct_writer: tiles blended and written row band by row band equal the whole-zone
blend, whatever the strip height; only restored pixels change; an interrupted write leaves no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from predict.reconstruct_writer import RestoredWriter
from predict.tiling import blend_window, origins

DATES, BANDS, SIZE = 3, 10, 6


def _source(path: Path, height: int, width: int, seed: int = 0) -> Path:
    values = np.random.default_rng(seed).integers(0, 10_000, (DATES * BANDS, height, width), dtype=np.uint16)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": DATES * BANDS, "dtype": "uint16",
        "crs": "EPSG:2154", "transform": from_origin(800_000, 6_500_000, 10, 10),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values)
    return path


def _tiles(height: int, width: int, seed: int = 1) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    stride = SIZE // 2
    return [
        (row, col, rng.uniform(0, 12_000, (DATES * BANDS, SIZE, SIZE)), rng.random((DATES, SIZE, SIZE)) < 0.4)
        for row in origins(height, SIZE, stride)
        for col in origins(width, SIZE, stride)
    ]


def _whole_zone(source: np.ndarray, tiles) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every tile accumulated over the whole zone at once, then merged."""
    window = blend_window(SIZE).astype(np.float64)
    total = np.zeros(source.shape, dtype=np.float64)
    weights = np.zeros(source.shape[1:], dtype=np.float64)
    replaced = np.zeros((DATES, *source.shape[1:]), dtype=bool)
    for row, col, values, flagged in tiles:
        total[:, row : row + SIZE, col : col + SIZE] += values * window
        weights[row : row + SIZE, col : col + SIZE] += window
        replaced[:, row : row + SIZE, col : col + SIZE] |= flagged
    blended = np.clip(np.rint(total / weights), 0, 65535).astype(np.uint16)
    return np.where(np.repeat(replaced, BANDS, axis=0), blended, source), replaced


def _write(source: Path, out: Path, tiles, rows_per_strip: int) -> None:
    rows = sorted({t[0] for t in tiles})
    with (
        rasterio.open(source) as src,
        RestoredWriter(out, src, "s2", SIZE, blend_window(SIZE), rows_per_strip) as writer,
    ):
        for i, top in enumerate(rows):
            for row, col, values, flagged in tiles:
                if row == top:
                    writer.add(row, col, values, flagged)
            writer.finish_row(rows[i + 1] if i + 1 < len(rows) else None)


@pytest.mark.parametrize("rows_per_strip", [1, 4, 64])
@pytest.mark.parametrize(("height", "width"), [(17, 13), (6, 9)])
def test_row_bands_write_the_whole_zone_blend(tmp_path: Path, rows_per_strip: int, height: int, width: int):
    source = _source(tmp_path / "s2.tif", height, width)
    tiles = _tiles(height, width)
    out = tmp_path / "maps" / "filled.tif"
    _write(source, out, tiles, rows_per_strip)
    with rasterio.open(source) as src:
        original, transform = src.read(), src.transform
    expected, replaced = _whole_zone(original, tiles)
    with rasterio.open(out) as result:
        assert (result.count, result.height, result.width, result.dtypes[0]) == (
            DATES * BANDS + DATES, height, width, "uint16",
        )  # fmt: skip
        assert result.transform == transform
        assert result.descriptions[0] == "B2_t0" and result.descriptions[-1] == f"reconstructed_t{DATES - 1}"
        series = result.read(list(range(1, DATES * BANDS + 1)))
        flags = result.read(list(range(DATES * BANDS + 1, result.count + 1)))
    assert np.array_equal(series, expected)
    assert np.array_equal(flags.astype(bool), replaced) and replaced.any() and not replaced.all()
    kept = ~np.repeat(replaced, BANDS, axis=0)
    assert np.array_equal(series[kept], original[kept])  # input values bit for bit where nothing was restored
    assert not out.with_name("filled.tif.partial").exists()


def test_an_interrupted_write_leaves_no_output(tmp_path: Path):
    source = _source(tmp_path / "s2.tif", 12, 12)
    out = tmp_path / "filled.tif"
    row, col, values, flagged = _tiles(12, 12)[0]
    with (
        pytest.raises(KeyboardInterrupt),
        rasterio.open(source) as src,
        RestoredWriter(out, src, "s2", SIZE, blend_window(SIZE), 1) as writer,
    ):
        writer.add(row, col, values, flagged)
        writer.finish_row(3)
        raise KeyboardInterrupt
    assert not out.exists() and not out.with_name("filled.tif.partial").exists()


def test_a_writer_closed_before_every_row_is_restored_says_so(tmp_path: Path):
    source = _source(tmp_path / "s2.tif", 12, 12)
    out = tmp_path / "filled.tif"
    with (
        pytest.raises(RuntimeError, match="3 of 12 rows restored"),
        rasterio.open(source) as src,
        RestoredWriter(out, src, "s2", SIZE, blend_window(SIZE)) as writer,
    ):
        writer.finish_row(3)
    assert not out.exists() and not out.with_name("filled.tif.partial").exists()
