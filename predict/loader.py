"""Tiles of a run's units read and preprocessed in worker processes, one batch of one unit at a time.

Reading a tile (windowed reads, decompression, date selection, padding) is Python and GDAL work
that a thread pool cannot spread over cores; a ``torch`` DataLoader's worker processes can, so the
GPU, not the host, sets the pace. Each batch holds consecutive tiles of *one* unit (the batch
sampler never crosses a unit), so a unit is computed from the same batches whichever process or
run maps it: the invariant that keeps maps bit-identical across ranks and resumes. Workers open
their own raster handles lazily (a few zones at a time) and die with the process that started them
(:class:`shards.loader.DieWithParent`). A tile that fails comes back as an item naming it and is
raised in the main process as :class:`TileError`, with the original cause (a user's
``DataError`` stays one, so the command line still exits 2 on bad data).
"""

from __future__ import annotations

import collections
import os
import pickle
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import PreprocessConfig
from maestro.modalities import MODALITIES
from predict.model import PredictModel
from predict.ranks import from_env
from predict.reading import TileData, TileReader
from predict.tiling import Tile
from predict.writing import GDAL_ENV
from predict.zone import Zone
from shards.loader import DieWithParent

MAX_WORKERS = 16
"""More workers than this per GPU only add memory: a batch a few deep per worker is plenty."""
OPEN_ZONES = 4
"""Zones whose rasters a worker keeps open: a unit's tiles come from one zone, and units run in order."""


class TileError(RuntimeError):
    """A tile could not be read, preprocessed or predicted: names it and keeps the cause."""

    def __init__(self, where: str, cause: BaseException):
        self.where, self.cause = where, cause
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")


def model_inputs(
    model: PredictModel, cloud_avoidance: bool, device: torch.device
) -> tuple[dict[str, int], PreprocessConfig]:
    """Pixels per tile side of each raster read (masks at the size of their image) and the
    model's preprocessing. Integers travel unscaled to a GPU (fewer bytes through the workers and
    PCIe; :func:`maestro.data.preprocess.scale_batch` scales them there); on CPU the workers scale
    them in parallel, exactly as before."""
    sizes = {key: model.specs[key].image_size for key in model.specs}
    for key in model.rasters(cloud_avoidance):
        if key not in sizes:
            sizes[key] = sizes[str(MODALITIES[key].companion_of)]
    preprocess = replace(model.preprocess(cloud_avoidance), scale_on_device=device.type == "cuda")
    return sizes, preprocess


def default_workers(local_world: int | None = None) -> int:
    """Worker processes per mapping process: the cores this process may use, shared with the other
    processes of the node (one per GPU), less two for the process feeding the GPU (its main thread
    launches the kernels; its pinning and writing threads take most of another core)."""
    local_world = local_world or from_env().local_world
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores // local_world - 2))


@dataclass(frozen=True)
class TileBatch:
    """Consecutive tiles ``[start, start + len(tiles))`` of job ``job``, collated, on the device."""

    job: int
    start: int
    tiles: tuple[Tile, ...]
    batch: dict[str, Any]
    """``inputs``, ``times``, ``valid`` as :func:`collate_model_samples` gives them."""
    invalid: torch.Tensor
    """(B, L, L) bool at output pixels: some input was nodata or outside the zone."""
    padded: bool
    """Some date of some tile is padding: read on the host, so the network need not ask the device."""


@dataclass(frozen=True)
class _Failure:
    """A failed batch, sent back as data: torch re-raises a worker's exception as ``type(text)``
    with the worker's traceback as text, which would lose the cause and the one-line message."""

    where: str
    cause: BaseException
    worker_traceback: str

    def error(self) -> TileError:
        error = TileError(self.where, self.cause)
        error.add_note(f"raised while reading tiles:\n{self.worker_traceback.rstrip()}")
        return error


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to cross from a worker), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


class TileDataset(Dataset):
    """Tiles of every job, indexed by (job, tile); :meth:`__getitems__` reads and collates a batch."""

    def __init__(
        self,
        work: Sequence[tuple[Zone, Sequence[Tile]]],
        sizes: dict[str, int],
        preprocess: PreprocessConfig,
        tile_size: int,
    ):
        self.work = [(zone, tuple(tiles)) for zone, tiles in work]
        self.sizes, self.preprocess, self.tile_size = sizes, preprocess, tile_size
        self._readers: collections.OrderedDict[Any, TileReader] = collections.OrderedDict()

    def __len__(self) -> int:
        return sum(len(tiles) for _, tiles in self.work)

    def _reader(self, zone: Zone) -> TileReader:
        reader = self._readers.get(zone.root)
        if reader is None:
            while len(self._readers) >= OPEN_ZONES:
                self._readers.popitem(last=False)[1].close()
            reader = self._readers[zone.root] = TileReader(zone, self.sizes, self.preprocess, self.tile_size)
        self._readers.move_to_end(zone.root)
        return reader

    def __getitem__(self, index: tuple[int, int]) -> TileData:
        zone, tiles = self.work[index[0]]
        return self._reader(zone).read(tiles[index[1]])

    def __getitems__(self, indices: Sequence[tuple[int, int]]) -> dict[str, Any] | _Failure:
        job, start = indices[0]
        tiles = self.work[job][1]
        where = tiles[start].name(self.tile_size)
        try:
            read = []
            for index in indices:
                where = tiles[index[1]].name(self.tile_size)
                read.append(self[index])
            where = f"{tiles[start].name(self.tile_size)} and the {len(indices) - 1} next"
            batch = collate_model_samples([data.sample for data in read])
            invalid = torch.from_numpy(np.stack([data.invalid for data in read]))
        except Exception as error:  # noqa: BLE001 - sent to the main process, raised there
            return _Failure(where, _portable(error), traceback.format_exc())
        parts = {part: batch[part] for part in ("inputs", "times", "valid")}
        return {"job": job, "start": start, "count": len(indices), "invalid": invalid, **parts}

    def close(self) -> None:
        while self._readers:
            self._readers.popitem()[1].close()


class JobBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``batch_size`` consecutive tiles of each job in turn, never two jobs in one, each
    handed out in parts of at most ``part_size`` tiles (a worker's unit of work)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, part_size: int | None = None):
        self.lengths, self.batch_size = list(lengths), batch_size
        self.part_size = min(part_size or batch_size, batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for job, length in enumerate(self.lengths):
            for start in range(0, length, self.batch_size):
                stop = min(length, start + self.batch_size)
                for part in range(start, stop, self.part_size):
                    yield [(job, tile) for tile in range(part, min(stop, part + self.part_size))]

    def __len__(self) -> int:
        return sum(
            -(-min(self.batch_size, length - start) // self.part_size)
            for length in self.lengths
            for start in range(0, length, self.batch_size)
        )


def _merge(parts: Sequence[dict[str, Any]], device: torch.device) -> tuple[dict[str, Any], torch.Tensor]:
    """One collated batch on ``device`` from consecutive parts collated apart: each series padded
    to the batch's longest (inputs and times with 0, valid with False, as one collate would), the
    copies queued without waiting."""
    batch: dict[str, Any] = {}
    for field in ("inputs", "times", "valid"):
        batch[field] = {}
        for key, first in parts[0][field].items():
            if len(parts) == 1:
                batch[field][key] = first.to(device, non_blocking=True)
                continue
            dates = max(part[field][key].shape[1] for part in parts)
            count = sum(part[field][key].shape[0] for part in parts)
            out = torch.zeros((count, dates, *first.shape[2:]), dtype=first.dtype, device=device)
            row = 0
            for part in parts:
                values = part[field][key]
                out[row : row + values.shape[0], : values.shape[1]].copy_(values, non_blocking=True)
                row += values.shape[0]
            batch[field][key] = out
    invalid = torch.cat([part["invalid"].to(device, non_blocking=True) for part in parts])
    return batch, invalid


@dataclass
class _WorkerInit:
    """A worker's setup: die with the parent, and one GDAL environment for the worker's lifetime
    (no .aux.xml side files next to the zone rasters)."""

    parent: int

    def __call__(self, worker_id: int) -> None:
        DieWithParent(self.parent)(worker_id)
        rasterio.Env(**GDAL_ENV).__enter__()


def _as_is(item: Any) -> Any:
    return item


class TileLoader:
    """Iterates the :class:`TileBatch` es of ``work`` in order, on ``device``; ``workers=0`` reads
    in this process.

    With ``parts`` > 1 each batch is read as that many parts by different workers and put together
    on the device: the first batch arrives after a part's reading time rather than a batch's, and
    the device sees its batch whole (the same tensors as one collate of its tiles would give).
    Use as a context manager: leaving it stops the workers and closes the rasters opened here.
    """

    def __init__(
        self,
        work: Sequence[tuple[Zone, Sequence[Tile]]],
        sizes: dict[str, int],
        preprocess: PreprocessConfig,
        tile_size: int,
        batch_size: int,
        workers: int,
        device: torch.device | None = None,
        parts: int = 1,
    ):
        self.dataset = TileDataset(work, sizes, preprocess, tile_size)
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        part_size = -(-batch_size // max(1, parts))
        sampler = JobBatches([len(tiles) for _, tiles in self.dataset.work], batch_size, part_size)
        options: dict[str, Any] = {}
        if workers > 0:
            options = {"prefetch_factor": 2 if parts == 1 else 4, "worker_init_fn": _WorkerInit(os.getpid())}
        self.loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=_as_is,
            pin_memory=self.device.type == "cuda",
            **options,
        )
        self._iterator: Iterator[Any] | None = None

    def __len__(self) -> int:
        return sum(len(range(0, len(tiles), self.batch_size)) for _, tiles in self.dataset.work)

    def __enter__(self) -> TileLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[TileBatch]:
        self._iterator = iter(self.loader)  # workers start here, before the caller's threads do
        parts: list[dict[str, Any]] = []
        for item in self._iterator:
            if isinstance(item, _Failure):
                raise item.error()
            parts.append(item)
            job, start = parts[0]["job"], parts[0]["start"]
            tiles = self.dataset.work[job][1]
            stop = min(len(tiles), start + self.batch_size)
            if item["start"] + item["count"] < stop:
                continue
            padded = not all(bool(v.all()) for part in parts for v in part["valid"].values())
            batch, invalid = _merge(parts, self.device)
            parts = []
            yield TileBatch(job, start, tiles[start:stop], batch, invalid, padded)

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:  # now, rather than whenever the iterator is collected
            shutdown()
        self.dataset.close()
