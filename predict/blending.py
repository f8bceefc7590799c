"""Window-weighted logit accumulation on the device over a unit's rows in flight, flushed strip by strip.

A unit's buffer is a ring of its output rows, as wide as the unit: it holds the rows from ``top``
down to the bottom of the lowest tile added, at most one tile height plus one flush quantum. Tiles
arrive row by row, so when a tile row starts at output row ``y`` no later tile touches the rows
above ``y``: those are final and are handed out (in whole ``quantum`` rows from the unit's top, so
that every block of the unit's file is written once, whole), and their ring rows are cleared for
the rows to come. Memory is set by the unit's width and the tile size, never by the zone.

The sums live on the network's device, so only uint8 classes (and encoded probabilities) cross
back to the host. Every operation is the float32 elementwise arithmetic of the former numpy
accumulator (add, divide, softmax over the same strip shapes), so a CPU map is bit-identical to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from maestro.tasks import mask_ignored
from predict.options import ProbabilityType
from predict.writing import NODATA


@dataclass(frozen=True)
class Strip:
    """Finished output rows ``[row, row + height)`` of columns ``[col, col + width)``."""

    row: int
    col: int
    logits: Any
    """(K, height, width) float32 blended logits (sum of weighted logits / sum of weights): a
    tensor on the accumulator's device (a numpy array is accepted by :func:`classify`)."""
    invalid: Any
    """(height, width) bool: an input was nodata or outside the zone there."""

    @property
    def height(self) -> int:
        return self.logits.shape[1]


class StripAccumulator:
    """Sums of weighted logits and of weights for the columns of one unit, streamed top to bottom.

    Rows ``[row_start, row_stop)`` and columns ``[col_start, col_stop)`` are the unit's, in the
    zone's output pixels; tiles reaching beyond them add only their part inside. One buffer holds
    the K logit sums, the sum of weights and the count of tiles with an invalid input, so adding a
    tile is one in-place addition (per ring segment): on a GPU each operation costs the host more
    than the device, and a batch adds dozens of tiles.
    """

    def __init__(
        self,
        num_classes: int,
        rows: tuple[int, int],
        cols: tuple[int, int],
        tile_size: int,
        quantum: int,
        device: torch.device | str = "cpu",
    ):
        (self.row_start, self.row_stop), (self.col_start, col_stop) = rows, cols
        self.width, self.tile_size, self.quantum = col_stop - self.col_start, tile_size, quantum
        self.num_classes = num_classes
        height = self.row_stop - self.row_start
        self.capacity = min(math.ceil((tile_size + quantum) / quantum) * quantum, height)
        self.buffer = torch.zeros(
            (num_classes + 2, self.capacity, self.width), dtype=torch.float32, device=device
        )
        """Channels: K weighted-logit sums, the weight sum, the invalid count."""
        self.uncovered = torch.zeros((), dtype=torch.bool, device=device)
        """Some handed-out pixel had no weight (a planning bug): checked once, by :meth:`check`,
        since testing it at every flush would wait for the device each time."""
        self.top = self.row_start
        """First output row not yet handed out."""

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    @staticmethod
    def stack(weighted: torch.Tensor, window: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
        """(B, K + 2, L, L) tiles to :meth:`add`: ``weighted`` (B, K, L, L) logits already multiplied
        by ``window`` (L, L), the window, and ``invalid`` (B, L, L) as 0/1."""
        count, size = weighted.shape[0], window.shape[-1]
        planes = [weighted, window.expand(count, 1, size, size), invalid[:, None].to(weighted.dtype)]
        return torch.cat(planes, dim=1)

    def _segments(self, start: int, stop: int) -> Iterator[tuple[int, slice]]:
        """(first output row, ring rows) of the contiguous pieces of output rows [start, stop)."""
        while start < stop:
            position = (start - self.row_start) % self.capacity
            count = min(stop - start, self.capacity - position)
            yield start, slice(position, position + count)
            start += count

    def add(self, row: int, col: int, tile: torch.Tensor) -> None:
        """Add one tile of :meth:`stack` (K + 2, L, L) whose top-left output pixel is (row, col)."""
        size = self.tile_size
        r0, r1 = max(row, self.row_start), min(row + size, self.row_stop)
        c0, c1 = max(col, self.col_start), min(col + size, self.col_start + self.width)
        if r1 <= r0 or c1 <= c0:
            return
        if r0 < self.top or r1 - self.top > self.capacity:
            raise RuntimeError(f"tile at row {row} is outside the rows in flight ({self.top} onwards)")
        tile_cols = slice(c0 - col, c1 - col)
        cols = slice(c0 - self.col_start, c1 - self.col_start)
        for first, ring in self._segments(r0, r1):
            rows = slice(first - row, first - row + ring.stop - ring.start)
            self.buffer[:, ring, cols] += tile[:, rows, tile_cols]

    def flush(self, until: int, *, final: bool = False) -> Strip | None:
        """Hand out the finished rows above ``until`` (rounded down to whole quanta; every row left
        with ``final``) and clear them in the ring."""
        stop = self.row_stop if final else min(until, self.row_stop)
        if not final and stop < self.row_stop:
            stop = self.top + ((stop - self.top) // self.quantum) * self.quantum
        count = stop - self.top
        if count <= 0:
            return None
        k, device = self.num_classes, self.buffer.device
        logits = torch.empty((k, count, self.width), dtype=torch.float32, device=device)
        invalid = torch.empty((count, self.width), dtype=torch.bool, device=device)
        for first, ring in self._segments(self.top, stop):
            rows = slice(first - self.top, first - self.top + ring.stop - ring.start)
            weights = self.buffer[k, ring]
            self.uncovered |= (weights <= 0).any()
            torch.div(self.buffer[:k, ring], weights, out=logits[:, rows])
            torch.gt(self.buffer[k + 1, ring], 0, out=invalid[rows])
            self.buffer[:, ring] = 0
        strip = Strip(self.top, self.col_start, logits, invalid)
        self.top = stop
        return strip

    def check(self) -> None:
        """Refuse a unit some of whose pixels no tile covered (waits for the device)."""
        if bool(self.uncovered):
            raise RuntimeError(
                f"rows {self.row_start}-{self.row_stop - 1}, cols {self.col_start}-"
                f"{self.col_start + self.width - 1} hold pixels no tile covered"
            )


def classify(
    strip: Strip, ignored: Sequence[int], probabilities: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(h, w) uint8 classes (NODATA where invalid) and optionally (K, h, w) softmax probabilities
    (NaN where invalid), on the strip's device; ignored channels are never predicted and get
    probability 0 (the masking of the test's metrics, :func:`maestro.tasks.mask_ignored`)."""
    logits = mask_ignored(torch.as_tensor(strip.logits), ignored, dim=0)
    invalid = torch.as_tensor(strip.invalid, device=logits.device)
    classes = logits.argmax(dim=0).to(torch.uint8).masked_fill_(invalid, NODATA)
    if not probabilities:
        return classes, None
    return classes, torch.softmax(logits, dim=0).masked_fill_(invalid, math.nan)


def encode_probabilities(probabilities: torch.Tensor, kind: ProbabilityType) -> torch.Tensor:
    """Probabilities in the file's encoding, on their device: uint8 0-255 (0 where NaN) or float16;
    the same roundings as :meth:`predict.writing.MapWriter.write` applies to float32 values."""
    if kind == "uint8":
        return torch.round(torch.nan_to_num(probabilities, nan=0.0) * 255.0).to(torch.uint8)
    return probabilities.to(torch.float16)
