"""Window-weighted logit accumulation over the rows of tiles in flight, flushed strip by strip.

A chunk's buffer is a ring of output rows: it holds the rows from ``top`` down to the bottom of
the lowest tile added, at most one tile height plus one flush quantum. Tiles arrive row by row,
so when a tile row starts at output row ``y`` no later tile touches the rows above ``y``: those
are final and are handed out (in whole ``quantum`` rows, so that every block of the file is
written once, whole), and their ring rows are cleared for the rows to come; rows in flight are
never moved. Memory is set by the chunk width and the tile size, never by the zone's height.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Strip:
    """Finished output rows ``[row, row + height)`` of columns ``[col, col + width)``."""

    row: int
    col: int
    logits: np.ndarray
    """(K, height, width) float32 blended logits (sum of weighted logits / sum of weights)."""
    invalid: np.ndarray
    """(height, width) bool: an input was nodata or outside the zone there."""

    @property
    def height(self) -> int:
        return self.logits.shape[1]


class StripAccumulator:
    """Sums of weighted logits and of weights for one column chunk, streamed top to bottom."""

    def __init__(
        self, num_classes: int, col_start: int, col_stop: int, grid_height: int, tile_size: int, quantum: int
    ):
        self.col_start, self.width = col_start, col_stop - col_start
        self.grid_height, self.tile_size, self.quantum = grid_height, tile_size, quantum
        self.capacity = min(math.ceil((tile_size + quantum) / quantum) * quantum, grid_height)
        self.sums = np.zeros((num_classes, self.capacity, self.width), dtype=np.float32)
        self.weights = np.zeros((self.capacity, self.width), dtype=np.float32)
        self.invalid = np.zeros((self.capacity, self.width), dtype=bool)
        self.top = 0
        """First output row not yet handed out."""

    @property
    def nbytes(self) -> int:
        return self.sums.nbytes + self.weights.nbytes + self.invalid.nbytes

    def _segments(self, start: int, stop: int) -> Iterator[tuple[int, slice]]:
        """(first output row, ring rows) of the contiguous pieces of output rows [start, stop)."""
        while start < stop:
            position = start % self.capacity
            count = min(stop - start, self.capacity - position)
            yield start, slice(position, position + count)
            start += count

    def add(self, row: int, col: int, weighted: np.ndarray, window: np.ndarray, invalid: np.ndarray) -> None:
        """Add one tile: ``weighted`` (K, L, L) logits already multiplied by ``window`` (L, L)."""
        size = self.tile_size
        r0, r1 = row, min(row + size, self.grid_height)
        c0, c1 = max(col, self.col_start), min(col + size, self.col_start + self.width)
        if row < self.top or r1 - self.top > self.capacity:
            raise RuntimeError(f"tile at row {row} is outside the rows in flight ({self.top} onwards)")
        if r1 <= r0 or c1 <= c0:
            return
        tile_cols = slice(c0 - col, c1 - col)
        cols = slice(c0 - self.col_start, c1 - self.col_start)
        for first, ring in self._segments(r0, r1):
            rows = slice(first - row, first - row + ring.stop - ring.start)
            self.sums[:, ring, cols] += weighted[:, rows, tile_cols]
            self.weights[ring, cols] += window[rows, tile_cols]
            self.invalid[ring, cols] |= invalid[rows, tile_cols]

    def flush(self, until: int, *, final: bool = False) -> Strip | None:
        """Hand out the finished rows above ``until`` (rounded down to whole quanta; every row left
        with ``final``) and clear them in the ring."""
        stop = self.grid_height if final else min(until, self.grid_height)
        if not final and stop < self.grid_height:
            stop = self.top + ((stop - self.top) // self.quantum) * self.quantum
        count = stop - self.top
        if count <= 0:
            return None
        logits = np.empty((self.sums.shape[0], count, self.width), dtype=np.float32)
        invalid = np.empty((count, self.width), dtype=bool)
        for first, ring in self._segments(self.top, stop):
            rows = slice(first - self.top, first - self.top + ring.stop - ring.start)
            weights = self.weights[ring]
            if (weights <= 0).any():
                raise RuntimeError(
                    f"rows {first}-{first + rows.stop - rows.start - 1} hold pixels no tile covered"
                )
            np.divide(self.sums[:, ring], weights, out=logits[:, rows])
            invalid[rows] = self.invalid[ring]
            self.sums[:, ring] = 0
            self.weights[ring] = 0
            self.invalid[ring] = False
        strip = Strip(self.top, self.col_start, logits, invalid)
        self.top = stop
        return strip
