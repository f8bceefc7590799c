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
from collections.abc import Callable, Mapping
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
from predict.options import PredictOptions, check_output, probabilities_path
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


def _outputs(out: Path, probabilities: bool) -> list[Path]:
    return [out, probabilities_path(out)] if probabilities else [out]


def _lock(layout: Layout, name: str, launch: str) -> bool:
    """Take ``name``'s lock for this launch (one rank wins; a later launch has its own)."""
    stem = f"{name}.{hashlib.sha256(launch.encode()).hexdigest()[:12]}"
    layout.records.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(layout.lock(stem), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


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
    layout = request.layout
    with rasterio.Env(**GDAL_ENV):
        zones = _open(model, options, request.zones)
        run = identity(model, options, request.weights)
        open_run(
            layout, run, zones, rank=ranks.rank, launch=launch, resume=request.resume, force=request.force
        )
        key, size = run["key"], model.tile_size
        stride = stride_for(size, options.overlap)
        plan = {name: plan_units(name, zone.grid, options.unit_px) for name, zone in zones.items()}
        stamps = {name: input_stamps(zone) for name, zone in zones.items()}
        units = [unit for name in zones for unit in plan[name]]
        mine = share(units, ranks.rank, ranks.world)
        todo = [u for u in mine if not is_done(layout, u, key, stamps[u.zone])]
        km2 = {name: zone.grid.pixel_size**2 / 1e6 for name, zone in zones.items()}
        log.info(
            "rank %d of %d: %d of the run's %d units (%d already done), %.4g km2 to map on %s",
            ranks.rank, ranks.world, len(mine), len(units), len(mine) - len(todo),
            sum(u.pixels * km2[u.zone] for u in todo), device,
        )  # fmt: skip
        timings: list[UnitTiming] = []

        def finished(stats: UnitStats) -> None:
            unit = stats.job.unit
            extra = {"tiles": stats.tiles, "nodata_pixels": stats.nodata_pixels}
            files = _outputs(stats.job.out, options.probabilities is not None)
            write_done(layout, unit, key, stamps[unit.zone], files, extra)
            timings.append(
                UnitTiming(unit.zone, unit.name, stats.km2, stats.seconds, stats.wait_seconds,
                           stats.busy_seconds, stats.tiles)
            )  # fmt: skip

        stopped = False
        try:
            stopped = _map(
                model, options, device, ranks, todo, zones, layout, size, stride, km2, finished, should_stop
            )
        except Exception:
            if request.single and not ranks.launched:  # as before units: a failed map leaves no file
                shutil.rmtree(layout.root, ignore_errors=True)
            raise
        outcome = Outcome(total=len(units), stopped=stopped)
        if not stopped:
            ours = {u.zone for u in mine}
            for name in zones:
                complete = name in ours and all(is_done(layout, u, key, stamps[name]) for u in plan[name])
                if complete and _lock(layout, name, launch):
                    outcome.products += _zone_products(model, request, options, zones[name], plan[name], run)
            if not request.single:
                outcome.products += _country_products(request, zones, launch)
        outcome.done = sum(is_done(layout, u, key, stamps[u.zone]) for u in units)
        outcome.seconds = time.perf_counter() - started
        if request.single and outcome.done == outcome.total:
            _summarise(outcome, layout, units, km2)
            grid = next(iter(zones.values())).grid
            outcome.width, outcome.height = grid.width, grid.height
            if request.out in outcome.products:
                shutil.rmtree(layout.root, ignore_errors=True)
        elif not request.single and not stopped:
            part = rank_report(ranks.rank, ranks.world, launch, str(device), started_wall, time.time(), timings,
                               len(mine) - len(todo))  # fmt: skip
            if publish(layout, part):
                outcome.products.append(layout.report)
    return outcome


def _map(
    model: PredictModel,
    options: PredictOptions,
    device: torch.device,
    ranks: Ranks,
    todo: list[Unit],
    zones: Mapping[str, Zone],
    layout: Layout,
    size: int,
    stride: int,
    km2: Mapping[str, float],
    finished: Callable[[UnitStats], None],
    should_stop: Callable[[], bool],
) -> bool:
    """Map ``todo`` with one UnitMapper and a progress bar; True when stopped before the end."""
    if not todo:
        return False
    for name in {u.zone for u in todo}:
        (layout.root / name).mkdir(parents=True, exist_ok=True)
    jobs = [
        UnitJob(
            zones[u.zone],
            u,
            tuple(unit_tiles(zones[u.zone].grid, size, stride, u)),
            layout.unit_map(u),
        )
        for u in todo
    ]
    bar = tqdm(
        total=sum(u.pixels * km2[u.zone] for u in todo),
        unit="km2",
        desc=f"rank {ranks.rank}",
        position=ranks.rank,
        disable=not options.progress,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} km2 [{elapsed}<{remaining}]",
    )
    with bar:
        return not UnitMapper(model, options, device).run(
            jobs, on_done=finished, should_stop=should_stop, progress=bar
        )


def _summarise(outcome: Outcome, layout: Layout, units: list[Unit], km2: Mapping[str, float]) -> None:
    for unit in units:
        record = read_json(layout.unit_record(unit)) or {}
        outcome.tiles += int(record.get("tiles", 0))
        outcome.nodata_pixels += int(record.get("nodata_pixels", 0))
        outcome.area_km2 += unit.pixels * km2[unit.zone]


def _item(
    model: PredictModel, zone: Zone, name: str, run: Mapping[str, Any], assets: dict[str, tuple[str, str]]
):
    dates = [raster.dates for raster in zone.rasters.values() if raster.dates is not None]
    return mosaic.stac_item(
        name, zone.grid, dates, {"source": run["model"]["source"], "id": run["model"]["id"]},
        model.task.class_names, model.task.palette, assets, NODATA,
    )  # fmt: skip


def _zone_products(
    model: PredictModel,
    request: Request,
    options: PredictOptions,
    zone: Zone,
    units: list[Unit],
    run: Mapping[str, Any],
) -> list[Path]:
    """The zone's VRT(s) and STAC Item; in single-map mode, the map itself (a COG) and its Item."""
    layout, name = request.layout, units[0].zone
    kinds = [("map", None)] + ([("probabilities", options.probabilities)] if options.probabilities else [])
    products, assets = [], {}
    for kind, probability_type in kinds:
        sources = []
        for unit in units:
            path = layout.unit_map(unit)
            path = probabilities_path(path) if probability_type else path
            sources.append(mosaic.place(zone.grid, path, unit.grid(zone.grid)))
        vrt = layout.zone_vrt(name)
        vrt = probabilities_path(vrt) if probability_type else vrt
        mosaic.write_vrt(vrt, zone.grid, sources)
        if request.single:
            final = probabilities_path(request.out) if probability_type else request.out
            products.append((final, probability_type))
            assets[kind] = (f"./{final.name}", "image/tiff; application=geotiff; profile=cloud-optimized")
        else:
            products.append((vrt, None))
            assets[kind] = (f"./{vrt.name}", VRT_MEDIA)
    item_path = request.out.with_suffix(".json") if request.single else layout.zone_item(name)
    item = _item(model, zone, request.out.stem if request.single else name, run, assets)
    written = []
    for path, probability_type in reversed(products):  # the class map last: its presence means done
        if request.single:
            vrt = layout.zone_vrt(name)
            mosaic.cog_from_vrt(probabilities_path(vrt) if probability_type else vrt, path, probability_type)
        written.append(path)
    write_json(item_path, item.to_dict(include_self_link=False))
    log.info("zone %s: wrote %s", name, ", ".join(str(p) for p in [*reversed(written), item_path]))
    return [*reversed(written), item_path]


def _country_products(request: Request, zones: Mapping[str, Zone], launch: str) -> list[Path]:
    """``mosaic.vrt`` over every zone's units once every zone's VRT is there (one rank builds it);
    zones in several CRSs get one mosaic per CRS, ``mosaic_EPSG_2154.vrt``, ..."""
    layout = request.layout
    if not all(layout.zone_vrt(name).is_file() for name in zones) or not _lock(layout, "mosaic", launch):
        return []
    by_crs: dict[str, list[str]] = {}
    for name, zone in zones.items():
        by_crs.setdefault(zone.crs.to_string(), []).append(name)
    written = []
    for crs, names in by_crs.items():
        path = layout.mosaic
        if len(by_crs) > 1:
            path = path.with_name(f"mosaic_{crs.replace(':', '_')}.vrt")
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
) -> Outcome:
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
