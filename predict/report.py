"""``predict_report.json``: how fast each unit was mapped and what held it back.

Every rank writes its own report (``.predict/report-rankNNNNN.json``) when it finishes; the last
one to finish a launch finds all of them and merges them into ``OUTDIR/predict_report.json``. Per
unit: its area, wall time, km²/h, the fraction of the time the main loop waited for tiles (input
bound when high) and the fraction the device was busy computing (the GPU's share of the time).
Totals per rank and for the launch tell whether a run was paced by the GPU, the readers or the
file system, and the rate to extrapolate from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from predict.records import Layout, read_json, write_json


@dataclass(frozen=True)
class UnitTiming:
    zone: str
    unit: str
    km2: float
    seconds: float
    wait_seconds: float
    busy_seconds: float
    tiles: int

    def entry(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        return {
            **asdict(self),
            "km2_per_hour": self.km2 / seconds * 3600.0,
            "wait_fraction": self.wait_seconds / seconds,
            "busy_fraction": self.busy_seconds / seconds,
        }


def _totals(units: Sequence[Mapping[str, Any]], wall: float) -> dict[str, Any]:
    km2 = sum(u["km2"] for u in units)
    seconds = sum(u["seconds"] for u in units)
    return {
        "units": len(units),
        "km2": km2,
        "tiles": sum(u["tiles"] for u in units),
        "wall_seconds": wall,
        "km2_per_hour": km2 / max(wall, 1e-9) * 3600.0,
        "wait_fraction": sum(u["wait_seconds"] for u in units) / max(seconds, 1e-9),
        "busy_fraction": sum(u["busy_seconds"] for u in units) / max(seconds, 1e-9),
    }


def rank_report(
    rank: int,
    world: int,
    launch: str,
    device: str,
    started: float,
    finished: float,
    timings: Sequence[UnitTiming],
    skipped: int,
) -> dict[str, Any]:
    """One rank's part: its units (this launch's; ``skipped`` were done before) and its totals."""
    units = [t.entry() for t in timings]
    return {
        "rank": rank,
        "world": world,
        "launch": launch,
        "device": device,
        "started": started,
        "finished": finished,
        "skipped_units": skipped,
        "totals": _totals(units, finished - started),
        "units": units,
    }


def merge(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The launch's report: every unit, per-rank totals, and totals over the launch's wall time
    (first start to last finish: the rate the whole launch achieved)."""
    ordered = sorted(reports, key=lambda r: r["rank"])
    units = [u for r in ordered for u in r["units"]]
    wall = max(r["finished"] for r in ordered) - min(r["started"] for r in ordered)
    totals = _totals(units, wall)
    totals["ranks"] = len(ordered)
    totals["skipped_units"] = sum(r["skipped_units"] for r in ordered)
    totals["km2_per_hour_per_rank"] = totals["km2_per_hour"] / max(len(ordered), 1)
    return {
        "totals": totals,
        "ranks": [{k: r[k] for k in ("rank", "device", "skipped_units", "totals")} for r in ordered],
        "units": sorted(units, key=lambda u: (u["zone"], u["unit"])),
    }


def _lock_name(launch: str) -> str:
    return "report-" + hashlib.sha256(launch.encode()).hexdigest()[:16]


def publish(layout: Layout, report: Mapping[str, Any]) -> bool:
    """Write this rank's report; merge them all when every rank of the launch has written its
    own (once: the first to take the lock). True when this call wrote ``predict_report.json``."""
    write_json(layout.rank_report(report["rank"]), report)
    parts = [read_json(layout.rank_report(rank)) for rank in range(report["world"])]
    if any(not part or part.get("launch") != report["launch"] for part in parts):
        return False
    try:
        os.close(os.open(layout.lock(_lock_name(report["launch"])), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    write_json(layout.report, merge(parts))
    return True
