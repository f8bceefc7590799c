"""The restored series of ``predict --reconstruct``, blended and written row band by row band.

Tiles arrive one row of tile origins at a time (:func:`predict.tiling.origins`, overlapping by
half). Rows above the next tile row's origin get no more contributions once a tile row is done, so
they are blended, merged with the input (only restored pixels change) and written; memory holds
one tile row of accumulators (``T x C x tile x zone width`` float64) and a few output rows, not
the zone. The output goes to ``{OUT}.partial`` in TIFF strips of :data:`ROWS_PER_STRIP` rows,
each written once and whole, and is renamed to ``OUT`` only when complete: an interrupted run
leaves no file that looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.windows import Window

from maestro.evaluation.cloudy import as_stored
from maestro.modalities import MODALITIES

ROWS_PER_STRIP = 64
"""Output rows per TIFF strip: each strip is compressed and written once, when all its rows are final."""


class RestoredWriter:
    """Accumulates blended tiles of one row of tile origins and writes the rows they finish.

    ``source`` is the open input series (its values are kept wherever nothing is restored);
    ``num_dates`` x ``num_bands`` its bands, date-major; tiles are ``size`` px, blended with
    ``window`` weights. Use as a context manager: on a clean exit the output is complete and renamed.
    """

    def __init__(
        self,
        out: Path,
        source: rasterio.io.DatasetReader,
        key: str,
        size: int,
        window: np.ndarray,
        rows_per_strip: int = ROWS_PER_STRIP,
    ):
        self.out, self.source, self.key, self.size = out, source, key, size
        self.window = window.astype(np.float64)
        self.num_bands = MODALITIES[key].num_bands
        self.num_dates = source.count // self.num_bands
        self.height, self.width = source.height, source.width
        self.dtype = np.dtype(source.dtypes[0])
        self.rows_per_strip = max(1, min(rows_per_strip, self.height))
        padded = max(self.width, size)  # a zone narrower than a tile still takes whole tiles
        self.total = np.zeros((source.count, size, padded), dtype=np.float64)
        self.weights = np.zeros((size, padded), dtype=np.float64)
        self.replaced = np.zeros((self.num_dates, size, padded), dtype=bool)
        self.top = 0
        """Zone row of the accumulators' first row (the current tile row's origin)."""
        self.done = 0
        """Rows finished (blended and merged); ``self.written`` of them are on disk."""
        self.written = 0
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.restored_pixels = 0
        self.partial = out.with_name(out.name + ".partial")
        self.dst: rasterio.io.DatasetWriter | None = None

    # ------------------------------------------------------------------ context
    def __enter__(self) -> RestoredWriter:
        profile = {
            **self.source.profile,
            "count": self.source.count + self.num_dates,
            "driver": "GTiff",
            "compress": "deflate",
            "interleave": "band",
            "tiled": False,
            "blockysize": self.rows_per_strip,
        }
        for key in ("nodata", "blockxsize"):
            profile.pop(key, None)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dst = rasterio.open(self.partial, "w", **profile)
        bands = MODALITIES[self.key].bands
        self.dst.descriptions = tuple(
            [f"{band}_t{t}" for t in range(self.num_dates) for band in bands]
            + [f"reconstructed_t{t}" for t in range(self.num_dates)]
        )
        first = self.source.count + 1
        self.dst.update_tags(
            reconstructed=f"bands {first}-{self.source.count + self.num_dates}: 1 where the pixel was restored"
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self.dst is not None
        complete = kind is None
        try:
            if complete:
                if self.done != self.height:
                    raise RuntimeError(f"{self.out}: {self.done} of {self.height} rows restored")
                self._flush(final=True)
        except BaseException:
            complete = False
            raise
        finally:
            self.dst.close()
            if complete:
                os.replace(self.partial, self.out)
            else:
                self.partial.unlink(missing_ok=True)

    # ------------------------------------------------------------------ tiles
    def add(self, row: int, col: int, values: np.ndarray, flagged: np.ndarray) -> None:
        """One tile at zone (``row``, ``col``): ``values (T*C, size, size)`` in the source's units
        and band order, ``flagged (T, size, size)`` the pixels it restored."""
        if row != self.top:  # tiles of the current tile row only
            raise ValueError(f"tile at row {row}: the writer is at tile row {self.top}")
        cols = slice(col, col + self.size)
        self.total[:, :, cols] += values * self.window
        self.weights[:, cols] += self.window
        self.replaced[:, :, cols] |= flagged

    def finish_row(self, next_top: int | None) -> None:
        """The current tile row is complete: rows up to ``next_top`` (the next tile row's origin;
        None for the last) are final. Blend, merge and queue them, then move the accumulators."""
        stop = self.height if next_top is None else next_top
        count = stop - self.top
        if not 0 < count <= self.size:
            raise ValueError(f"next tile row {next_top} after {self.top} (tiles of {self.size} px)")
        self._finalise(count)
        self.total = np.roll(self.total, -count, axis=1)
        self.weights = np.roll(self.weights, -count, axis=0)
        self.replaced = np.roll(self.replaced, -count, axis=1)
        self.total[:, -count:] = 0
        self.weights[-count:] = 0
        self.replaced[:, -count:] = False
        self.top = stop
        self._flush(final=False)

    # ------------------------------------------------------------------ rows
    def _finalise(self, count: int) -> None:
        width = self.width
        total, weights = self.total[:, :count, :width], self.weights[:count, :width]
        replaced = self.replaced[:, :count, :width]
        blended = as_stored(total / np.maximum(weights, 1e-12), self.dtype)
        raw = self.source.read(window=Window(0, self.top, width, count))
        series = np.where(np.repeat(replaced, self.num_bands, axis=0), blended, raw)
        self.pending.append((series, replaced.astype(self.dtype)))
        self.restored_pixels += int(replaced.sum())
        self.done += count

    def _flush(self, final: bool) -> None:
        """Write whole strips of the pending rows (and the rest, when ``final``)."""
        assert self.dst is not None
        pending_rows = self.done - self.written
        rows = pending_rows if final else pending_rows - pending_rows % self.rows_per_strip
        if rows <= 0:
            return
        series = np.concatenate([s for s, _ in self.pending], axis=1)
        replaced = np.concatenate([r for _, r in self.pending], axis=1)
        window = Window(0, self.written, self.width, rows)
        bands = self.source.count
        self.dst.write(series[:, :rows], indexes=list(range(1, bands + 1)), window=window)
        self.dst.write(
            replaced[:, :rows], indexes=list(range(bands + 1, bands + self.num_dates + 1)), window=window
        )
        self.written += rows
        self.pending = [(series[:, rows:], replaced[:, rows:])] if rows < pending_rows else []
