"""Units of a zone mapped at the device's pace: loader workers -> batched inference -> blend on the device.

A :class:`UnitMapper` holds the network on its device (under ``torch.compile`` when asked) and
maps :class:`UnitJob` s in order. Tiles come from worker processes (:mod:`predict.loader`), batch
by batch within a unit; integer rasters travel unscaled to a GPU and are scaled there, as in
pretraining. Each batch runs under bf16 autocast on a GPU, its logits are weighted by the blending
window and added to the unit's ring buffer on the device (:mod:`predict.blending`); finished strips
become classes (and probabilities) there and only those bytes are copied back, without waiting,
to a writer thread. A unit's files appear complete (renamed into place) before ``on_done`` hears
of them; a failure names the tile and leaves no file of the unit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
import torch
from tqdm import tqdm

from maestro.data.preprocess import scale_batch
from maestro.errors import ConfigError
from maestro.hub.folder import suite_version
from predict.blending import Strip, StripAccumulator, classify, encode_probabilities
from predict.loader import TileBatch, TileError, TileLoader, default_workers, model_inputs
from predict.model import PredictModel
from predict.options import PredictOptions, check_device_name
from predict.tiling import Tile, blend_window
from predict.units import Unit
from predict.writing import BLOCK, GDAL_ENV, NODATA, MapWriter
from predict.zone import Zone

log = logging.getLogger(__name__)

CPU_BATCH = 8
"""Tiles per batch on CPU (the map is bit-identical to the one batched so before units existed)."""
CUDA_BATCH = 32
"""First batch size tried on a GPU; halved while a forward pass runs out of memory."""
PENDING_WRITES = 4
"""Strips copied back and waiting for the writer thread before the main loop waits for it."""
PARTS = 4
"""Parts a GPU batch is read in, by as many workers (:class:`predict.loader.TileLoader`)."""
PUBLISHING = 2
"""Finished units whose files are being published (COG conversion) before the main loop waits."""

__all__ = ["TileError", "UnitJob", "UnitMapper", "UnitStats", "resolve_device"]


@dataclass(frozen=True)
class UnitJob:
    zone: Zone
    unit: Unit
    tiles: tuple[Tile, ...]
    out: Path
    """The unit's class-map GeoTIFF; probabilities at ``probabilities_path(out)``."""


@dataclass(frozen=True)
class UnitStats:
    job: UnitJob
    seconds: float
    """Wall time of the unit, from asking the loader for its first batch to its last rows written
    (its files are published alongside the next unit)."""
    wait_seconds: float
    """Time the main loop waited for the loader: the unit was input-bound for that long."""
    busy_seconds: float
    """Device time in forward passes and blending (CUDA events on a GPU, wall time on CPU)."""
    tiles: int
    nodata_pixels: int

    @property
    def km2(self) -> float:
        return self.job.unit.pixels * self.job.zone.grid.pixel_size**2 / 1e6

    @property
    def km2_per_hour(self) -> float:
        return self.km2 / max(self.seconds, 1e-9) * 3600.0


def resolve_device(name: str | torch.device | None) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


def _thread_env() -> None:
    """A GDAL environment for the writer thread's lifetime."""
    rasterio.Env(**GDAL_ENV).__enter__()


def _take(batch: dict[str, Any], part: slice, pad: int) -> dict[str, Any]:
    """Tiles ``part`` of a collated batch, the last one repeated ``pad`` times (one compiled shape)."""
    out = {}
    for field, values in batch.items():
        taken = {key: tensor[part] for key, tensor in values.items()}
        if pad:
            taken = {key: torch.cat([t, t[-1:].expand(pad, *t.shape[1:])]) for key, t in taken.items()}
        out[field] = taken
    return out


class _Unit:
    """One unit in flight: its ring buffer, its writer, pending strip writes and counters."""

    def __init__(self, mapper: UnitMapper, job: UnitJob, io: ThreadPoolExecutor, started: float):
        unit, model, options = job.unit, mapper.model, mapper.options
        self.job, self.mapper, self.io = job, mapper, io
        self.started = started
        """When the main loop began waiting for the unit's first batch."""
        self.accumulator = StripAccumulator(
            model.num_classes,
            (unit.row, unit.row + unit.height),
            (unit.col, unit.col + unit.width),
            model.tile_size,
            BLOCK,
            mapper.device,
        )
        grid = unit.grid(job.zone.grid)
        job.out.parent.mkdir(parents=True, exist_ok=True)
        self.writer = MapWriter(
            job.out, grid, model.task.class_names, model.task.palette, mapper.tags, options.probabilities
        )
        self.writer.__enter__()
        self.pixel_km2 = job.zone.grid.pixel_size**2 / 1e6
        self.pending: list[Future[None]] = []
        self.nodata = torch.zeros((), dtype=torch.int64, device=mapper.device)
        self.events: list[tuple[Any, Any]] = []
        self.wait = self.busy = 0.0
        self.tiles = 0

    def add(self, tiles: Sequence[Tile], weighted: torch.Tensor, invalid: torch.Tensor) -> None:
        stacked = StripAccumulator.stack(weighted, self.mapper.window, invalid)
        for tile, planes in zip(tiles, stacked, strict=True):
            self.emit(self.accumulator.flush(tile.row))
            self.accumulator.add(tile.row, tile.col, planes)
        self.tiles += len(tiles)

    def emit(self, strip: Strip | None) -> None:
        if strip is None:
            return
        kind = self.mapper.options.probabilities
        classes, probs = classify(strip, self.mapper.model.task.ignored, kind is not None)
        self.nodata += (classes == NODATA).sum()
        encoded = encode_probabilities(probs, kind) if probs is not None and kind is not None else None
        host = [t.to("cpu", non_blocking=True) if t is not None else None for t in (classes, encoded)]
        event = None
        if classes.is_cuda:
            event = torch.cuda.Event()
            event.record()
        row, col = strip.row - self.job.unit.row, strip.col - self.job.unit.col
        self.pending.append(self.io.submit(self._write, event, row, col, *host))
        while len(self.pending) > PENDING_WRITES:
            self.pending.pop(0).result()
        bar = self.mapper.progress
        if bar is not None:
            area = classes.numel() * self.pixel_km2
            bar.update(min(area, bar.total - bar.n) if bar.total else area)  # no float overshoot

    def _write(
        self, event: Any, row: int, col: int, classes: torch.Tensor, probs: torch.Tensor | None
    ) -> None:
        if event is not None:
            event.synchronize()
        self.writer.write(row, col, classes.numpy(), probs.numpy() if probs is not None else None)

    def finish(self) -> UnitStats:
        """The last rows written; the files are published by :meth:`publish`, off the main loop."""
        self.emit(self.accumulator.flush(self.accumulator.row_stop, final=True))
        for future in self.pending:
            future.result()
        self.pending.clear()
        self.accumulator.check()
        if self.events:
            torch.cuda.synchronize(self.mapper.device)
            self.busy = sum(start.elapsed_time(end) for start, end in self.events) / 1000.0
        seconds = time.perf_counter() - self.started
        return UnitStats(self.job, seconds, self.wait, self.busy, self.tiles, int(self.nodata))

    def publish(self, cog: bool) -> None:
        """Rename the unit's files into place, as COGs with overviews when ``cog`` (a few seconds
        for a 10,240 px unit, in a thread of its own so the device keeps mapping meanwhile)."""
        try:
            self.writer.commit(cog=cog)
        except BaseException:
            self.writer.abort()
            raise

    def abort(self) -> None:
        for future in self.pending:
            future.cancel()
        for future in self.pending:
            with contextlib.suppress(Exception):
                future.result()
        self.writer.abort()


class UnitMapper:
    """One per process: the network on its device (compiled when asked), one DataLoader whose
    worker processes read tiles of every job in order (batches never cross a unit)."""

    def __init__(
        self,
        model: PredictModel,
        options: PredictOptions,
        device: torch.device | str | None = None,
        cog_units: bool = False,
    ):
        self.model, self.options = model, options
        self.cog_units = cog_units
        """Publish unit files as COGs with overviews (the product itself when units are the map's
        tiles); else as the streamed tiled GeoTIFFs (a single map is built from them anyway)."""
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        if cuda and self.device.index is not None:  # events, pinned copies: on this GPU, not cuda:0
            torch.cuda.set_device(self.device)
        network = model.network.to(self.device).eval()
        self.network: Any = torch.compile(network, dynamic=False) if options.compile else network
        self.batch_size = options.batch_size or (CUDA_BATCH if cuda else CPU_BATCH)
        self.split = self.batch_size
        """Tiles per forward pass: the batch size, halved on a GPU while a pass runs out of memory."""
        self.workers = default_workers() if options.workers is None else options.workers
        self.window = torch.from_numpy(blend_window(model.tile_size)).to(self.device)
        self.sizes, self.preprocess = model_inputs(model, options.cloud_avoidance, self.device)
        self.tags = {
            "task": model.task.target.task,
            "level": model.task.target.level,
            "model": model.source,
            "overlap": options.overlap,
            "software": f"maestro-eo {suite_version()} predict",
        }
        self.progress: tqdm | None = None

    def run(
        self,
        jobs: Sequence[UnitJob],
        *,
        on_done: Callable[[UnitStats], None],
        should_stop: Callable[[], bool] = lambda: False,
        progress: tqdm | None = None,
    ) -> bool:
        """Map ``jobs`` in order; ``False`` when ``should_stop()`` turned true (checked between
        batches: the unit in flight is dropped with its temporary files)."""
        self.progress = progress
        log.info(
            "%d unit(s), %d tiles, batches of %d on %s, %d reader process(es)%s",
            len(jobs),
            sum(len(job.tiles) for job in jobs),
            self.batch_size,
            self.device,
            self.workers,
            ", compiled" if self.options.compile else "",
        )
        work = [(job.zone, job.tiles) for job in jobs]
        cuda = self.device.type == "cuda"
        parts = PARTS if cuda and self.workers > 0 else 1
        loader = TileLoader(
            work,
            self.sizes,
            self.preprocess,
            self.model.tile_size,
            self.batch_size,
            self.workers,
            self.device,
            parts,
        )
        current: _Unit | None = None
        io: ThreadPoolExecutor | None = None
        publisher: ThreadPoolExecutor | None = None
        publishing: collections.deque[tuple[Future[None], UnitStats]] = collections.deque()

        def report(keep: int) -> None:
            """``on_done`` for published units, in order, until at most ``keep`` are in flight."""
            while publishing and (len(publishing) > keep or publishing[0][0].done()):
                future, stats = publishing.popleft()
                future.result()
                on_done(stats)

        try:
            with rasterio.Env(**GDAL_ENV), loader:
                batches = iter(loader)
                while True:
                    asked = time.perf_counter()
                    batch = next(batches, None)  # the workers start at the first one
                    waited = time.perf_counter() - asked
                    if batch is None or should_stop():  # finished units are still published
                        report(0)
                        return batch is None
                    if io is None:  # threads only once the workers are forked
                        io = ThreadPoolExecutor(
                            1, thread_name_prefix="predict-write", initializer=_thread_env
                        )
                        publisher = ThreadPoolExecutor(
                            PUBLISHING, thread_name_prefix="predict-publish", initializer=_thread_env
                        )
                    if current is None:
                        current = _Unit(self, jobs[batch.job], io, asked)
                    current.wait += waited
                    self._map_batch(current, batch)
                    if batch.start + len(batch.tiles) == len(current.job.tiles):
                        assert publisher is not None
                        stats, finished, current = current.finish(), current, None
                        publishing.append((publisher.submit(finished.publish, self.cog_units), stats))
                    report(PUBLISHING)
        finally:
            if current is not None:
                current.abort()
            for executor in (io, publisher):
                if executor is not None:
                    executor.shutdown(wait=True)

    def _map_batch(self, unit: _Unit, batch: TileBatch) -> None:
        cuda = self.device.type == "cuda"
        started = time.perf_counter()
        events = (
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else None
        )
        if events is not None:
            events[0].record()
        try:
            weighted = self._forward(batch.batch, batch.padded)
        except Exception as error:  # noqa: BLE001 - re-raised with the tiles named
            size = self.model.tile_size
            count = len(batch.tiles)
            raise TileError(
                batch.tiles[0].name(size) + (f" and the {count - 1} next" if count > 1 else ""), error
            ) from error
        unit.add(batch.tiles, weighted, batch.invalid)  # a failed write is not the tiles' fault
        if events is not None:
            events[1].record()
            unit.events.append(events)
        else:
            unit.busy += time.perf_counter() - started

    def _forward(self, moved: dict[str, Any], padded: bool) -> torch.Tensor:
        """(B, K, L, L) float32 logits x the blending window, on the device."""
        if self.preprocess.scale_on_device:
            scale_batch(moved, self.preprocess)
        count = next(iter(moved["inputs"].values())).shape[0]
        outputs, start = [], 0
        while start < count:
            size = min(self.split, count - start)
            pad = self.split - size if self.options.compile else 0
            part = moved if size == count and not pad else _take(moved, slice(start, start + size), pad)
            try:
                outputs.append(self._network(part, padded)[:size])
            except torch.cuda.OutOfMemoryError:
                if self.split == 1:
                    raise
                self.split //= 2
                torch.cuda.empty_cache()
                log.warning("out of GPU memory: forward passes of %d tiles from now on", self.split)
                continue
            start += size
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _network(self, batch: dict[str, Any], padded: bool) -> torch.Tensor:
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            logits = self.network(batch["inputs"], batch["times"], batch["valid"], padded=padded)["logits"]
            return logits.float() * self.window
