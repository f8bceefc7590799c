"""Work units: rectangles of a zone's output pixels, the tiles each needs, and each rank's share.

A unit is the smallest piece of work that is scheduled, written, recorded as done and resumed. Its
edges lie on multiples of :data:`predict.writing.BLOCK` (except at the zone's right and bottom
edges), so unit files tile the map without partial blocks. A unit's tiles are every tile of the
zone's *global* tile grid that touches it, in row-major order: a pixel near a unit boundary is
blended from the same tiles, added in the same order, whichever unit, rank or run computes it,
which keeps the map bit-identical however the work is split. Tiles straddling two units are
predicted by both; each keeps only its own pixels.

Nothing here needs torch: every rank plans the same units from the zones alone and takes its
:func:`share`, so ranks need no communication beyond the launcher's environment.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from affine import Affine

from maestro.errors import ConfigError
from predict.tiling import Grid, Tile, origins
from predict.writing import BLOCK


@dataclass(frozen=True)
class Unit:
    """Output rows ``[row, row + height)`` x columns ``[col, col + width)`` of one zone."""

    zone: str
    """The zone's name (its folder name), unique within a run."""
    row: int
    col: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """File-name stem of the unit's outputs and records; sorts in row-major order."""
        return f"r{self.row:06d}_c{self.col:06d}"

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def grid(self, zone_grid: Grid) -> Grid:
        """The unit's own north-up grid: the zone's, shifted to the unit's top-left pixel."""
        transform = zone_grid.transform @ Affine.translation(self.col, self.row)
        return Grid(transform, self.width, self.height, zone_grid.crs)


def check_unit_px(unit_px: int) -> None:
    if unit_px < BLOCK or unit_px % BLOCK:
        raise ConfigError(f"--unit-px must be a positive multiple of {BLOCK}, got {unit_px}")


def plan_units(zone: str, grid: Grid, unit_px: int) -> list[Unit]:
    """The zone's units of ``unit_px`` x ``unit_px`` output pixels (smaller at the right and bottom
    edges), in row-major order."""
    check_unit_px(unit_px)
    return [
        Unit(zone, row, col, min(unit_px, grid.height - row), min(unit_px, grid.width - col))
        for row in range(0, grid.height, unit_px)
        for col in range(0, grid.width, unit_px)
    ]


def unit_tiles(grid: Grid, tile_size: int, stride: int, unit: Unit) -> list[Tile]:
    """Every tile of the zone's global grid touching ``unit``, row-major (tile row, tile column)."""
    rows = origins(grid.height, tile_size, stride)
    cols = origins(grid.width, tile_size, stride)
    return [
        Tile(row, col, (r, c))
        for r, row in enumerate(rows)
        if row < unit.row + unit.height and row + tile_size > unit.row
        for c, col in enumerate(cols)
        if col < unit.col + unit.width and col + tile_size > unit.col
    ]


def share(units: Sequence[Unit], rank: int, world: int) -> list[Unit]:
    """The units ``rank`` of ``world`` maps: longest-processing-time balancing by pixels.

    Largest units first, each to the least loaded rank (the lowest rank on ties), so every rank
    computes the same assignment from the same list; a rank's units come back in plan order
    (zone by zone, row-major), which keeps its reads local.
    """
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not in a world of {world} process(es)")
    order = sorted(range(len(units)), key=lambda i: (-units[i].pixels, i))
    loads = [(0, r) for r in range(world)]
    mine = []
    for index in order:
        load, owner = heapq.heappop(loads)
        if owner == rank:
            mine.append(index)
        heapq.heappush(loads, (load + units[index].pixels, owner))
    return [units[i] for i in sorted(mine)]
