"""``predict_zone``: tiles read in threads -> batched inference -> blended strips -> the map files.

Tiles stream in chunk-then-row order (:mod:`predict.tiling`) through a small pool of reader
threads (in order, a few batches ahead), are collated like training batches and run under bf16
autocast on a GPU. Each tile's logits are multiplied by the blending window on the device and
added to the chunk's strip buffer (:mod:`predict.blending`); finished strips become classes (and
probabilities) and are written at once (:mod:`predict.writing`). A failure anywhere names the
tile and leaves no output file.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from tqdm import tqdm

from maestro.data.collate import collate_model_samples
from maestro.errors import ConfigError
from maestro.hub.folder import suite_version
from maestro.modalities import MODALITIES
from maestro.tasks import mask_ignored
from predict.blending import Strip, StripAccumulator
from predict.model import PredictModel
from predict.options import PredictOptions, check_device_name, check_output
from predict.reading import TileData, TileReader
from predict.tiling import Chunk, Tile, blend_window, chunk_columns, plan_tiles, stride_for
from predict.writing import BLOCK, GDAL_ENV, NODATA, MapWriter
from predict.zone import Zone, open_zone

log = logging.getLogger(__name__)


class TileError(RuntimeError):
    """A tile could not be read, preprocessed or predicted: names it and keeps the cause."""

    def __init__(self, where: str, cause: BaseException):
        self.where, self.cause = where, cause
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")


@dataclass(frozen=True)
class PredictSummary:
    paths: list[Path]
    width: int
    height: int
    area_km2: float
    tiles: int
    seconds: float
    nodata_fraction: float
    chunks: int = 1

    @property
    def km2_per_hour(self) -> float:
        return self.area_km2 / max(self.seconds, 1e-9) * 3600.0


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


class ReaderPool:
    """Reads tiles in ``workers`` threads, each with its own raster handles, yielding them in order."""

    def __init__(self, zone: Zone, model: PredictModel, cloud_avoidance: bool, workers: int):
        sizes = {key: model.specs[key].image_size for key in model.specs}
        for key in zone.rasters:  # masks are read at the size of their image
            if key not in sizes:
                sizes[key] = sizes[str(MODALITIES[key].companion_of)]
        self.tile_size = model.tile_size
        self._args = (zone, sizes, model.preprocess(cloud_avoidance), model.tile_size)
        self._local = threading.local()
        self._readers: list[TileReader] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="predict-read", initializer=_thread_env
        )
        self.ahead = 4 * workers

    def _read(self, tile: Tile) -> TileData:
        try:
            reader = getattr(self._local, "reader", None)
            if reader is None:
                reader = self._local.reader = TileReader(*self._args)
                with self._lock:
                    self._readers.append(reader)
            return reader.read(tile)
        except Exception as error:  # noqa: BLE001 - re-raised with the tile named
            raise TileError(tile.name(self.tile_size), error) from error

    def imap(self, tiles: Iterable[Tile], ahead: int) -> Iterator[TileData]:
        pending: collections.deque[Future[TileData]] = collections.deque()
        source = iter(tiles)
        for tile in source:
            pending.append(self._executor.submit(self._read, tile))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for reader in self._readers:
            reader.close()


def _thread_env() -> None:
    """A GDAL environment for the reader thread's lifetime: datasets opened inside an existing one
    own no environment, so the main thread may close them."""
    rasterio.Env(**GDAL_ENV).__enter__()


def _batched(items: Iterable[TileData], size: int) -> Iterator[list[TileData]]:
    batch: list[TileData] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_batch(
    network: torch.nn.Module, batch: Sequence[TileData], device: torch.device, window: torch.Tensor
) -> np.ndarray:
    """(B, K, L, L) float32 logits x the blending window for a batch of tiles."""
    collated = collate_model_samples([data.sample for data in batch])
    moved = {
        part: {k: v.to(device, non_blocking=True) for k, v in collated[part].items()}
        for part in ("inputs", "times", "valid")
    }
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        logits = network(moved["inputs"], moved["times"], moved["valid"])["logits"]
        return (logits.float() * window).cpu().numpy()


def classify(
    strip: Strip, ignored: Sequence[int], probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(h, w) uint8 classes (NODATA where invalid) and optionally (K, h, w) softmax probabilities
    (NaN where invalid); ignored channels are never predicted and get probability 0 (the masking
    of the test's metrics, :func:`maestro.tasks.mask_ignored`)."""
    logits = mask_ignored(torch.from_numpy(strip.logits), ignored, dim=0)
    classes = logits.argmax(dim=0).numpy().astype(np.uint8)
    classes[strip.invalid] = NODATA
    if not probabilities:
        return classes, None
    probs = torch.softmax(logits, dim=0).numpy()
    probs[:, strip.invalid] = np.nan
    return classes, probs


class _Mapping:
    """The state of one run: the chunk buffer in use, the writer, the progress bar, counters."""

    def __init__(
        self,
        model: PredictModel,
        grid_height: int,
        chunks: Sequence[Chunk],
        writer: MapWriter,
        bar: tqdm,
        pixel_area_km2: float,
        probabilities: bool,
    ):
        self.model, self.grid_height, self.chunks = model, grid_height, chunks
        self.writer, self.bar, self.pixel_area_km2 = writer, bar, pixel_area_km2
        self.probabilities = probabilities
        self.window = blend_window(model.tile_size)
        self.accumulator: StripAccumulator | None = None
        self.chunk = -1
        self.nodata = 0

    def add(self, data: TileData, weighted: np.ndarray) -> None:
        """Blend one tile, after writing every row no later tile of its chunk can touch."""
        tile = data.tile
        if tile.chunk != self.chunk:
            self.finish_chunk()
            chunk = self.chunks[tile.chunk]
            self.accumulator = StripAccumulator(
                self.model.num_classes, chunk.start, chunk.stop, self.grid_height, self.model.tile_size, BLOCK
            )
            self.chunk = tile.chunk
        assert self.accumulator is not None
        self.emit(self.accumulator.flush(tile.row))
        self.accumulator.add(tile.row, tile.col, weighted, self.window, data.invalid)

    def finish_chunk(self) -> None:
        if self.accumulator is not None:
            self.emit(self.accumulator.flush(self.grid_height, final=True))
            self.accumulator = None

    def emit(self, strip: Strip | None) -> None:
        if strip is None:
            return
        classes, probs = classify(strip, self.model.task.ignored, self.probabilities)
        self.writer.write(strip.row, strip.col, classes, probs)
        self.nodata += int((classes == NODATA).sum())
        self.bar.update(min(classes.size * self.pixel_area_km2, self.bar.total - self.bar.n))


def _stream(
    pool: ReaderPool,
    tiles: Sequence[Tile],
    mapping: _Mapping,
    network: torch.nn.Module,
    device: torch.device,
    batch_size: int,
) -> None:
    """Tiles -> batches -> weighted logits -> chunk buffers -> written strips, in order."""
    size = mapping.model.tile_size
    window = torch.from_numpy(mapping.window).to(device)
    for batch in _batched(pool.imap(tiles, 2 * batch_size + pool.ahead), batch_size):
        try:
            weighted = run_batch(network, batch, device, window)
        except Exception as error:  # noqa: BLE001 - re-raised with the tiles named
            where = batch[0].tile.name(size) + (f" and the {len(batch) - 1} next" if len(batch) > 1 else "")
            raise TileError(where, error) from error
        for data, logits in zip(batch, weighted, strict=True):
            mapping.add(data, logits)
    mapping.finish_chunk()


def predict_zone(
    model: PredictModel,
    zone_dir: str | Path,
    out: str | Path,
    options: PredictOptions | None = None,
    device: str | torch.device | None = None,
) -> PredictSummary:
    """Map a whole zone with ``model`` into ``out`` (module docstring)."""
    options = options or PredictOptions()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    started = time.perf_counter()
    size = model.tile_size
    with rasterio.Env(**GDAL_ENV):
        zone = open_zone(
            zone_dir,
            model.rasters(options.cloud_avoidance),
            {key: model.input_pixel_m(key) for key in model.specs},
            model.label_pixel_m,
        )
        out = check_output(Path(out), options.overwrite, options.probabilities is not None)
        out.parent.mkdir(parents=True, exist_ok=True)
        grid = zone.grid
        stride = stride_for(size, options.overlap)
        per_column = (model.num_classes * 4 + 5) * (size + BLOCK)
        chunks = chunk_columns(grid.width, size, stride, options.buffer_mib * 2**20 // per_column, BLOCK)
        tiles = plan_tiles(grid, size, stride, chunks)
        log.info(
            "%d tiles of %d px (%.1f m), stride %d px, %d column chunk(s), batches of %d on %s",
            len(tiles),
            size,
            model.footprint_m,
            stride,
            len(chunks),
            options.batch_size,
            device,
        )
        network = model.network.to(device).eval()
        tags = {
            "task": model.task.target.task,
            "level": model.task.target.level,
            "model": model.source,
            "overlap": options.overlap,
            "software": f"maestro-eo {suite_version()} predict",
        }
        writer = MapWriter(out, grid, model.task.class_names, model.task.palette, tags, options.probabilities)
        bar = tqdm(
            total=grid.area_km2,
            unit="km2",
            desc="mapping",
            disable=not options.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} km2 [{elapsed}<{remaining}]",
        )
        with writer, bar:
            mapping = _Mapping(
                model,
                grid.height,
                chunks,
                writer,
                bar,
                grid.pixel_size**2 / 1e6,
                options.probabilities is not None,
            )
            pool = ReaderPool(zone, model, options.cloud_avoidance, options.workers)
            try:
                _stream(pool, tiles, mapping, network, device, options.batch_size)
            finally:
                pool.close()
            paths = writer.commit()
    seconds = time.perf_counter() - started
    summary = PredictSummary(
        paths,
        grid.width,
        grid.height,
        grid.area_km2,
        len(tiles),
        seconds,
        mapping.nodata / (grid.width * grid.height),
        len(chunks),
    )
    log.info(
        "wrote %s: %d x %d px, %.4g km2 in %.1f s (%.4g km2/h), %d tiles, %.1f%% nodata",
        ", ".join(map(str, paths)),
        grid.width,
        grid.height,
        grid.area_km2,
        seconds,
        summary.km2_per_hour,
        len(tiles),
        100 * summary.nodata_fraction,
    )
    return summary
