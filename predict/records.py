"""What a run has finished, on disk, so that an interrupted or repeated run redoes only what it must.

Layout of an output folder (``--zones ... --out OUTDIR``; in single-map mode the same, in a hidden
work folder next to the map)::

    OUTDIR/{zone}/{unit}.tif (+ {unit}_probabilities.tif)   the units' maps
    OUTDIR/{zone}.vrt, OUTDIR/{zone}.json                   each zone's mosaic and STAC Item
    OUTDIR/mosaic.vrt, OUTDIR/predict_report.json           every zone, the run's timings
    OUTDIR/.predict/run.json                                model id and the options that change pixels
    OUTDIR/.predict/units/{zone}/{unit}.json                one done record per finished unit

``run.json`` pins what the pixels depend on; mixing maps of two models (or overlaps, ...) in one
folder is refused unless ``--force`` starts over. A unit's done record is written atomically after
its files are in place; it is valid while the run key, the zone's input files (size and mtime_ns)
and the unit's output files (sizes) are as recorded, so a rewritten raster redoes exactly its
zone's units and a unit killed half-way is simply redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.errors import ConfigError
from predict.units import Unit
from predict.zone import DATES_SUFFIXES, Zone

log = logging.getLogger(__name__)

RECORDS = ".predict"
FORCE_WAIT_S = 600.0
"""How long a rank other than 0 waits for rank 0 to clear a folder under ``--force``."""


@dataclass(frozen=True)
class Layout:
    """Where every file of a run lives under ``root`` (module docstring)."""

    root: Path

    @property
    def records(self) -> Path:
        return self.root / RECORDS

    @property
    def run_json(self) -> Path:
        return self.records / "run.json"

    def unit_record(self, unit: Unit) -> Path:
        return self.records / "units" / unit.zone / f"{unit.name}.json"

    def unit_map(self, unit: Unit) -> Path:
        return self.root / unit.zone / f"{unit.name}.tif"

    def zone_vrt(self, zone: str) -> Path:
        return self.root / f"{zone}.vrt"

    def zone_item(self, zone: str) -> Path:
        return self.root / f"{zone}.json"

    def lock(self, name: str) -> Path:
        return self.records / f"{name}.lock"

    def rank_report(self, rank: int) -> Path:
        return self.records / f"report-rank{rank:05d}.json"

    @property
    def mosaic(self) -> Path:
        return self.root / "mosaic.vrt"

    @property
    def report(self) -> Path:
        return self.root / "predict_report.json"


def run_identity(model: str, source: str, pixel_options: Mapping[str, Any]) -> dict[str, Any]:
    """What run.json pins: the model id (its source for the reader) and the options that change
    pixels; ``key`` hashes the id and options (not the source: a moved model folder is the same)."""
    key = hashlib.sha256(json.dumps([model, dict(pixel_options)], sort_keys=True).encode()).hexdigest()
    return {"key": key, "model": {"id": model, "source": source}, "options": dict(pixel_options)}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def create_json(path: Path, data: Any) -> bool:
    """Write ``data`` to ``path`` only if it does not exist yet (atomic and exclusive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink()


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ``None`` when absent or unreadable (a record that does not count)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts = []
    if old.get("model", {}).get("id") != new["model"]["id"]:
        parts.append(
            f"model {old.get('model', {}).get('source')} (id {str(old.get('model', {}).get('id'))[:12]}) "
            f"!= {new['model']['source']} (id {new['model']['id'][:12]})"
        )
    for name in sorted(set(old.get("options", {})) | set(new["options"])):
        was, now = old.get("options", {}).get(name), new["options"].get(name)
        if was != now:
            parts.append(f"{name} {was!r} != {now!r}")
    return "; ".join(parts) or "a different run record"


def clear(layout: Layout, zones: Iterable[str]) -> None:
    """Remove the records and what this run would write (``--force``); other files stay."""
    shutil.rmtree(layout.records, ignore_errors=True)
    for zone in zones:
        shutil.rmtree(layout.root / zone, ignore_errors=True)
        for path in (layout.zone_vrt(zone), layout.zone_item(zone)):
            path.unlink(missing_ok=True)
    for path in (layout.mosaic, layout.report):
        path.unlink(missing_ok=True)


def open_run(
    layout: Layout,
    identity: Mapping[str, Any],
    zones: Iterable[str],
    *,
    rank: int,
    launch: str | None,
    resume: bool,
    force: bool,
) -> None:
    """Start or continue the run in ``layout.root``, or refuse to mix it with another one.

    ``launch`` names this launch (the same on every rank, ``None`` when unknown): a run.json written
    by the same launch is this run's own. ``--force``: rank 0 clears the folder and writes run.json;
    the other ranks wait for it.
    """
    record = {**identity, "launch": launch, "created": time.time()}
    if force:
        if rank == 0:
            old = read_json(layout.run_json)
            if not (old and launch is not None and old.get("launch") == launch):
                clear(layout, zones)
                write_json(layout.run_json, record)
            return
        _wait_for(layout, identity, launch)
        return
    if create_json(layout.run_json, record):
        return
    old = read_json(layout.run_json) or {}
    same_launch = launch is not None and old.get("launch") == launch
    if not same_launch and not resume:
        raise ConfigError(
            f"{layout.root} already holds a run (records in {layout.records}); pass --resume to "
            "continue it or --force to start over"
        )
    if old.get("key") != identity["key"]:
        raise ConfigError(
            f"{layout.root} was mapped with another model or options ({_differences(old, identity)}); "
            "maps of both cannot be mixed: pass --force (instead of --resume) to start over"
        )


def _wait_for(layout: Layout, identity: Mapping[str, Any], launch: str | None) -> None:
    if launch is None:
        raise ConfigError("--force with several processes needs torchrun or srun (to know the launch)")
    deadline = time.monotonic() + FORCE_WAIT_S
    while time.monotonic() < deadline:
        old = read_json(layout.run_json)
        if old and old.get("launch") == launch and old.get("key") == identity["key"]:
            return
        time.sleep(0.2)
    raise ConfigError(f"--force: rank 0 did not start the run in {layout.root} within {FORCE_WAIT_S:.0f} s")


def input_stamps(zone: Zone) -> dict[str, list[int]]:
    """(size, mtime_ns) of every file the zone's pixels come from: its rasters and date lists."""
    paths = {raster.path for raster in zone.rasters.values()}
    for key in zone.rasters:
        paths.update(p for s in DATES_SUFFIXES if (p := zone.root / f"{key}{s}").is_file())
    stamps = {}
    for path in sorted(paths):  # by name in the zone folder: the folder may be moved or mounted elsewhere
        stat = path.stat()
        stamps[path.name] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def unit_outputs(layout: Layout, files: Iterable[Path]) -> dict[str, int]:
    return {str(Path(f).relative_to(layout.root)): Path(f).stat().st_size for f in files}


def write_done(
    layout: Layout,
    unit: Unit,
    key: str,
    inputs: Mapping[str, list[int]],
    files: Iterable[Path],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The unit's done record, once its files are in place (``extra``: facts kept for summaries)."""
    record = {
        **(extra or {}),
        "key": key,
        "unit": [unit.row, unit.col, unit.height, unit.width],
        "inputs": dict(inputs),
        "outputs": unit_outputs(layout, files),
    }
    write_json(layout.unit_record(unit), record)


def is_done(layout: Layout, unit: Unit, key: str, inputs: Mapping[str, list[int]]) -> bool:
    """Whether ``unit`` has a valid done record: same run key, geometry, inputs, output sizes."""
    record = read_json(layout.unit_record(unit))
    if not isinstance(record, dict):
        return False
    if record.get("key") != key or record.get("unit") != [unit.row, unit.col, unit.height, unit.width]:
        return False
    if record.get("inputs") != dict(inputs):
        return False
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return False
    for name, size in outputs.items():
        with contextlib.suppress(OSError):
            if (layout.root / name).stat().st_size == size:
                continue
        return False
    return True
