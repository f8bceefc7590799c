"""The driver: zones -> units -> this rank's share -> skip the done ones -> map -> records -> products.

Every rank runs the same plan (:mod:`predict.units`) and maps its share with one
:class:`predict.engine.UnitMapper`; each finished unit gets its done record at once
(:mod:`predict.records`), so a stop or a crash loses at most the units in flight. When a rank has
mapped its last unit it looks at each zone it took part in: if every unit of the zone is done, the
first rank to take the zone's lock for this launch builds the zone's products
(:mod:`predict.mosaic`); the country mosaic and the merged report (:mod:`predict.report`) follow
the same rule. A rank that died leaves its units undone; ``--resume`` maps them and builds what
is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import torch
from tqdm import tqdm

from maestro.config import to_dict
from maestro.errors import ConfigError
from maestro.hub.folder import suite_version
from predict import mosaic
from predict.engine import UnitJob, UnitMapper, UnitStats, resolve_device
from predict.model import PredictModel
from predict.options import PredictOptions, check_output, item_path, probabilities_path
from predict.ranks import Ranks
from predict.records import (
    Layout,
    input_stamps,
    is_done,
    open_run,
    read_json,
    run_identity,
    write_done,
    write_json,
)
from predict.report import UnitTiming, publish, rank_report
from predict.tiling import stride_for
from predict.units import Unit, plan_units, share, unit_tiles
from predict.writing import GDAL_ENV, NODATA
from predict.zone import Zone, open_zone

log = logging.getLogger(__name__)

VRT_MEDIA = "application/xml"
"""GDAL VRTs are XML; STAC has no media type of their own."""
COG_MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class Request:
    """What to map and where: ``zones`` (name -> folder) into ``out``, an output folder, or, with
    ``single``, one zone into the map ``out`` (its units in a hidden work folder next to it)."""

    zones: Mapping[str, Path]
    out: Path
    single: bool = False
    resume: bool = False
    force: bool = False
    weights: str = "ema"

    @property
    def layout(self) -> Layout:
        return Layout(work_folder(self.out) if self.single else self.out)


@dataclass
class Outcome:
    total: int
    """Units of the whole run (every rank)."""
    done: int = 0
    """Units with a valid done record when this rank stopped or finished."""
    stopped: bool = False
    products: list[Path] = field(default_factory=list)
    """Maps, VRTs, STAC Items and reports this rank wrote."""
    seconds: float = 0.0
    area_km2: float = 0.0
    tiles: int = 0
    nodata_pixels: int = 0
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class PredictSummary:
    """One zone mapped into one map (:func:`predict_zone`)."""

    paths: list[Path]
    width: int
    height: int
    area_km2: float
    tiles: int
    """Tiles predicted (a tile touching two units is predicted for each)."""
    seconds: float
    nodata_fraction: float
    units: int = 1

    @property
    def km2_per_hour(self) -> float:
        return self.area_km2 / max(self.seconds, 1e-9) * 3600.0


def work_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.work")


def model_id(model: PredictModel) -> str:
    """sha256 over the network's config and every tensor (name, dtype, shape, bytes) in key order:
    the same weights give the same id wherever their folder or Hub cache lies."""
    digest = hashlib.sha256(repr(sorted(to_dict(model.config).items())).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def identity(model: PredictModel, options: PredictOptions, weights: str) -> dict[str, Any]:
    """What a run pins: the model and every option that changes a pixel of the maps."""
    pixel_options = {
        "overlap": options.overlap,
        "probabilities": options.probabilities,
        "cloud_avoidance": options.cloud_avoidance,
        "unit_px": options.unit_px,
        "weights": weights,
        "version": suite_version(),
    }
    return run_identity(model_id(model), model.source, pixel_options)


def device_for(name: str | None, ranks: Ranks) -> torch.device:
    """``--device``, or the GPU of this local rank when launched on several (``cuda:LOCAL_RANK``)."""
    if ranks.launched and (name == "cuda" or (name is None and torch.cuda.is_available())):
        name = ranks.device
    return resolve_device(name)


def _open(model: PredictModel, options: PredictOptions, folders: Mapping[str, Path]) -> dict[str, Zone]:
    pixels = {key: model.input_pixel_m(key) for key in model.specs}
    keys = model.rasters(options.cloud_avoidance)
    return {name: open_zone(folder, keys, pixels, model.label_pixel_m) for name, folder in folders.items()}


def _lock(layout: Layout, name: str, launch: str) -> bool:
    """Take ``name``'s lock for this launch (one rank wins; a later launch has its own)."""
    stem = f"{name}.{hashlib.sha256(launch.encode()).hexdigest()[:12]}"
    layout.records.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(layout.lock(stem), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class _Rank:
    """One rank's view of a run: the zones, the plan, its share, the records; it maps its units and
    builds the products it completes."""

    def __init__(
        self,
        model: PredictModel,
        request: Request,
        options: PredictOptions,
        device: torch.device,
        ranks: Ranks,
        launch: str,
    ):
        self.model, self.request, self.options = model, request, options
        self.device, self.ranks, self.launch = device, ranks, launch
        self.layout = request.layout
        self.zones = _open(model, options, request.zones)
        self.run = identity(model, options, request.weights)
        self.key = self.run["key"]
        self.plan = {name: plan_units(name, zone.grid, options.unit_px) for name, zone in self.zones.items()}
        self.stamps = {name: input_stamps(zone) for name, zone in self.zones.items()}
        self.units = [unit for units in self.plan.values() for unit in units]
        self.mine = share(self.units, ranks.rank, ranks.world)
        self.timings: list[UnitTiming] = []

    def done(self, unit: Unit) -> bool:
        return is_done(self.layout, unit, self.key, self.stamps[unit.zone])

    def km2(self, units: Sequence[Unit]) -> float:
        return sum(u.pixels * self.zones[u.zone].grid.pixel_size ** 2 / 1e6 for u in units)

    def finished(self, stats: UnitStats) -> None:
        """A unit's files are in place: record it as done, keep its timing for the report."""
        unit = stats.job.unit
        files = _outputs(stats.job.out, self.options.probabilities is not None)
        extra = {"tiles": stats.tiles, "nodata_pixels": stats.nodata_pixels}
        write_done(self.layout, unit, self.key, self.stamps[unit.zone], files, extra)
        self.timings.append(
            UnitTiming(unit.zone, unit.name, stats.km2, stats.seconds, stats.wait_seconds,
                       stats.busy_seconds, stats.tiles)
        )  # fmt: skip

    def map(self, todo: Sequence[Unit], should_stop: Callable[[], bool]) -> bool:
        """Map ``todo`` with one UnitMapper and a progress bar in km2; True when stopped."""
        if not todo:
            return False
        size = self.model.tile_size
        stride = stride_for(size, self.options.overlap)
        jobs = []
        for unit in todo:
            grid = self.zones[unit.zone].grid
            tiles = tuple(unit_tiles(grid, size, stride, unit))
            jobs.append(UnitJob(self.zones[unit.zone], unit, tiles, self.layout.unit_map(unit)))
        bar = tqdm(
            total=self.km2(todo),
            unit="km2",
            desc=f"rank {self.ranks.rank}",
            position=self.ranks.rank,
            disable=not self.options.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} km2 [{elapsed}<{remaining}]",
        )
        with bar:
            mapper = UnitMapper(self.model, self.options, self.device, cog_units=not self.request.single)
            return not mapper.run(jobs, on_done=self.finished, should_stop=should_stop, progress=bar)

    def build(self) -> list[Path]:
        """The products of every zone this rank took part in and whose units are all done (the
        first rank to take the zone's lock builds them), then the country mosaic."""
        products = []
        for name in dict.fromkeys(u.zone for u in self.mine):
            # last units first: ranks map their shares in plan order, so those still in flight are late
            complete = all(self.done(u) for u in reversed(self.plan[name]))
            if complete and _lock(self.layout, name, self.launch):
                products += _zone_products(self, name)
        if not self.request.single:
            products += _country_products(self)
        return products


def map_units(
    model: PredictModel,
    request: Request,
    options: PredictOptions,
    device: torch.device,
    ranks: Ranks,
    launch: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Map this rank's share of ``request`` and build every product it completes (module docstring)."""
    started_wall, started = time.time(), time.perf_counter()
    if ranks.launched and launch is None:
        raise ConfigError(
            f"{ranks.world} processes but no launch id in the environment: start them with torchrun or srun"
        )
    launch = launch or uuid.uuid4().hex
    with rasterio.Env(**GDAL_ENV):
        rank = _Rank(model, request, options, device, ranks, launch)
        layout = rank.layout
        open_run(layout, rank.run, rank.zones, rank=ranks.rank, launch=launch, resume=request.resume,
                 force=request.force)  # fmt: skip
        todo = [u for u in rank.mine if not rank.done(u)]
        log.info(
            "rank %d of %d: %d of the run's %d units (%d already done), %.4g km2 to map on %s",
            ranks.rank, ranks.world, len(rank.mine), len(rank.units), len(rank.mine) - len(todo),
            rank.km2(todo), device,
        )  # fmt: skip
        try:
            outcome = Outcome(total=len(rank.units), stopped=rank.map(todo, should_stop))
            if outcome.stopped or request.single:
                outcome.done = sum(rank.done(u) for u in rank.units)
            if not outcome.stopped and (not request.single or outcome.done == outcome.total):
                outcome.products = rank.build()
        except Exception:
            if request.single and not ranks.launched:  # as before units: a failed map leaves no file
                shutil.rmtree(layout.root, ignore_errors=True)
            raise
        if request.single and request.out in outcome.products:
            _summarise(outcome, rank)
            shutil.rmtree(layout.root, ignore_errors=True)
        elif not request.single and not outcome.stopped:
            part = rank_report(ranks.rank, ranks.world, launch, str(device), started_wall, time.time(),
                               rank.timings, len(rank.mine) - len(todo))  # fmt: skip
            if publish(layout, part):
                outcome.products.append(layout.report)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _outputs(out: Path, probabilities: bool) -> list[Path]:
    return [out, probabilities_path(out)] if probabilities else [out]


def _summarise(outcome: Outcome, rank: _Rank) -> None:
    """Tiles, nodata and area of the single map, from its units' done records."""
    for unit in rank.units:
        record = read_json(rank.layout.unit_record(unit)) or {}
        outcome.tiles += int(record.get("tiles", 0))
        outcome.nodata_pixels += int(record.get("nodata_pixels", 0))
    grid = next(iter(rank.zones.values())).grid
    outcome.area_km2, outcome.width, outcome.height = grid.area_km2, grid.width, grid.height


def _zone_products(rank: _Rank, name: str) -> list[Path]:
    """The zone's VRT(s) and STAC Item; in single-map mode, the map itself (a COG) and its Item."""
    request, layout, zone, units = rank.request, rank.layout, rank.zones[name], rank.plan[name]
    kinds = [("map", None)] + (
        [("probabilities", rank.options.probabilities)] if rank.options.probabilities else []
    )
    finals, assets = [], {}
    for kind, probability_type in kinds:
        pick = probabilities_path if probability_type else (lambda path: path)
        sources = [mosaic.place(zone.grid, pick(layout.unit_map(u)), u.grid(zone.grid)) for u in units]
        vrt = mosaic.write_vrt(pick(layout.zone_vrt(name)), zone.grid, sources)
        if request.single:
            final = pick(request.out)
            finals.append((vrt, final, probability_type))
            assets[kind] = (f"./{final.name}", COG_MEDIA)
        else:
            finals.append((vrt, vrt, None))
            assets[kind] = (f"./{vrt.name}", VRT_MEDIA)
    for vrt, final, probability_type in reversed(finals):  # the class map last: its presence means done
        if request.single:
            mosaic.cog_from_vrt(vrt, final, probability_type)
    item_file = item_path(request.out) if request.single else layout.zone_item(name)
    dates = [raster.dates for raster in zone.rasters.values() if raster.dates is not None]
    model = {"source": rank.run["model"]["source"], "id": rank.run["model"]["id"]}
    item = mosaic.stac_item(
        item_file.stem,
        zone.grid,
        dates,
        model,
        rank.model.task.class_names,
        rank.model.task.palette,
        assets,
        NODATA,
    )
    write_json(item_file, item.to_dict(include_self_link=False))
    written = [final for _, final, _ in finals] + [item_file]
    log.info("zone %s: wrote %s", name, ", ".join(map(str, written)))
    return written


def _country_products(rank: _Rank) -> list[Path]:
    """``mosaic.vrt`` over every zone's VRT once they are all there (one rank builds it); zones in
    several CRSs get one mosaic per CRS, ``mosaic_EPSG_2154.vrt``, ..."""
    layout, zones = rank.layout, rank.zones
    if not all(layout.zone_vrt(name).is_file() for name in zones) or not _lock(layout, "mosaic", rank.launch):
        return []
    by_crs: dict[str, list[str]] = {}
    for name, zone in zones.items():
        by_crs.setdefault(zone.crs.to_string(), []).append(name)
    written = []
    for crs, names in by_crs.items():
        path = (
            layout.mosaic
            if len(by_crs) == 1
            else layout.mosaic.with_name(f"mosaic_{crs.replace(':', '_')}.vrt")
        )
        grid = mosaic.union_grid([zones[n].grid for n in names])
        sources = [mosaic.place(grid, layout.zone_vrt(n), zones[n].grid) for n in names]
        written.append(mosaic.write_vrt(path, grid, sources, skip_nodata=True))
    log.info("wrote %s", ", ".join(map(str, written)))
    return written


def predict_zone(
    model: PredictModel,
    zone_dir: str | Path,
    out: str | Path,
    options: PredictOptions | None = None,
    device: str | torch.device | None = None,
) -> PredictSummary:
    """Map one zone into one COG, ``out``, in this process (the library's entry point)."""
    options = options or PredictOptions()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    out = check_output(Path(out), options.overwrite, options.probabilities is not None)
    request = Request({Path(zone_dir).name: Path(zone_dir)}, out, single=True)
    outcome = map_units(model, request, options, device, Ranks())
    summary = summary_of(outcome)
    log.info(
        "wrote %s: %d x %d px, %.4g km2 in %.1f s (%.4g km2/h), %d tiles, %.1f%% nodata",
        ", ".join(map(str, summary.paths)), summary.width, summary.height, summary.area_km2,
        summary.seconds, summary.km2_per_hour, summary.tiles, 100 * summary.nodata_fraction,
    )  # fmt: skip
    return summary


def summary_of(outcome: Outcome) -> PredictSummary:
    maps = [p for p in outcome.products if p.suffix.lower() in (".tif", ".tiff")]
    return PredictSummary(
        maps,
        outcome.width,
        outcome.height,
        outcome.area_km2,
        outcome.tiles,
        outcome.seconds,
        outcome.nodata_pixels / max(outcome.width * outcome.height, 1),
        outcome.total,
    )
