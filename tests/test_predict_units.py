"""Work units of ``predict``: they tile the zone once, carry the right tiles, and split over ranks."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from maestro.errors import ConfigError
from predict.tiling import Grid, origins
from predict.units import Unit, plan_units, share, unit_tiles
from predict.writing import BLOCK


def _grid(width: int, height: int) -> Grid:
    return Grid(Affine(0.2, 0, 700_000.0, 0, -0.2, 6_600_000.0), width, height, CRS.from_epsg(2154))


@pytest.mark.parametrize(
    ("width", "height", "unit_px"), [(1000, 700, 256), (512, 512, 512), (100, 60, 10240)]
)
def test_units_cover_the_grid_exactly_once_on_block_edges(width, height, unit_px) -> None:
    grid = _grid(width, height)
    units = plan_units("z", grid, unit_px)
    seen = np.zeros((height, width), np.int32)
    for unit in units:
        seen[unit.row : unit.row + unit.height, unit.col : unit.col + unit.width] += 1
        assert unit.row % BLOCK == 0 and unit.col % BLOCK == 0
        assert unit.height == unit_px or unit.row + unit.height == height
        assert unit.width == unit_px or unit.col + unit.width == width
    assert (seen == 1).all()
    assert [(u.row, u.col) for u in units] == sorted((u.row, u.col) for u in units)  # row-major
    assert sorted(u.name for u in units) == [u.name for u in units]
    assert len({u.name for u in units}) == len(units)


def test_unit_px_must_be_whole_blocks() -> None:
    for bad in (0, 100, 300):
        with pytest.raises(ConfigError, match="--unit-px"):
            plan_units("z", _grid(100, 100), bad)


def test_unit_grid_is_the_zone_grid_shifted_to_its_corner() -> None:
    grid = _grid(1000, 700)
    unit = Unit("z", 256, 512, 256, 256)
    sub = unit.grid(grid)
    assert (sub.width, sub.height, sub.crs) == (256, 256, grid.crs)
    assert sub.transform @ (0, 0) == pytest.approx(grid.transform @ (512, 256))
    assert sub.transform @ (256, 256) == pytest.approx(grid.transform @ (768, 512))
    assert sub.pixel_size == grid.pixel_size and unit.pixels == 256 * 256


def test_unit_tiles_are_the_global_tiles_touching_it_in_row_major_order() -> None:
    grid, size, stride = _grid(1000, 700), 64, 48
    rows, cols = origins(700, size, stride), origins(1000, size, stride)
    for unit in plan_units("z", grid, 256):
        tiles = unit_tiles(grid, size, stride, unit)
        expected = [
            (r, c)
            for r in rows
            for c in cols
            if r < unit.row + unit.height
            and r + size > unit.row
            and c < unit.col + unit.width
            and c + size > unit.col
        ]
        assert [(t.row, t.col) for t in tiles] == expected
        assert [t.index for t in tiles] == sorted(t.index for t in tiles)
        assert all((t.row, t.col) == (rows[t.index[0]], cols[t.index[1]]) for t in tiles)
        covered = np.zeros((700, 1000), bool)
        for tile in tiles:
            covered[tile.row : tile.row + size, tile.col : tile.col + size] = True
        assert covered[unit.row : unit.row + unit.height, unit.col : unit.col + unit.width].all()


def test_share_is_disjoint_complete_balanced_and_the_same_on_every_rank() -> None:
    units = [
        *plan_units("a", _grid(3000, 2000), 512),
        *plan_units("b", _grid(700, 300), 256),
        *plan_units("c", _grid(90, 40), 256),
    ]
    for world in (1, 2, 3, 5):
        shares = [share(units, rank, world) for rank in range(world)]
        assert shares == [share(list(units), rank, world) for rank in range(world)]  # deterministic
        flat = [u for part in shares for u in part]
        assert sorted(flat, key=units.index) == units and len(set(flat)) == len(units)
        for part in shares:
            assert part == sorted(part, key=units.index)  # plan order within a rank
        loads = [sum(u.pixels for u in part) for part in shares]
        assert max(loads) - min(loads) <= max(u.pixels for u in units)  # LPT bound
    with pytest.raises(ConfigError, match="rank"):
        share(units, 2, 2)


def test_share_of_fewer_units_than_ranks_leaves_some_ranks_idle() -> None:
    units = plan_units("z", _grid(300, 200), 256)
    assert len(units) == 2
    assert [len(share(units, r, 4)) for r in range(4)] == [1, 1, 0, 0]
