"""``write_toy_dataset``: plan the patches, simulate and write each one, then the tables and splits."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maestro.data.layout import TOY_MARKER, dates_table_path
from maestro.data.metadata import write_dates_table
from maestro.data.toy.acquisitions import ACQUISITIONS, draw_dates, to_yyyymmdd
from maestro.data.toy.plan import SPLIT_DOMAINS, PatchPlan, plan_patches
from maestro.data.toy.render import PRODUCTS, Renderer, Terrain
from maestro.data.toy.scene import build_scene
from maestro.data.toy.writing import check_inside, prepare_output, write_patch, write_splits
from maestro.datasets import register_toy
from maestro.modalities import MODALITIES

log = logging.getLogger(__name__)


@dataclass
class ToySummary:
    """What was written, for the CLI log and for tests."""

    root: Path
    seed: int
    patches: dict[str, int]
    domains: dict[str, tuple[str, ...]]
    dates: dict[str, tuple[int, float, int]]
    """Dates table -> (min, mean, max) number of dates per patch."""
    short_s2: int
    """Patches with fewer S2 dates than the model's default number of dates."""
    cloudy_fraction: float
    """Share of S2 dates with some cloud probability above zero."""
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        lines = [
            f"toy FLAIR-HUB dataset at {self.root} (seed {self.seed}): {sum(self.patches.values())} patches"
        ]
        lines += [
            f"  {split:5s} {n:4d} patches  domains {', '.join(self.domains[split])}"
            for split, n in self.patches.items()
        ]
        lines += [
            f"  dates {table:15s} min {lo:3d}  mean {mean:5.1f}  max {hi:3d}"
            for table, (lo, mean, hi) in self.dates.items()
        ]
        lines.append(
            f"  S2 series shorter than {MODALITIES['s2'].num_dates} dates: {self.short_s2} patches; "
            f"cloudy S2 dates: {100 * self.cloudy_fraction:.0f}%"
        )
        lines.append(f"  {self.bytes_written / 2**20:.1f} MiB written in {self.seconds:.1f} s")
        return "\n".join(lines)


def _simulate(
    plan: PatchPlan, seed: int, terrain: Terrain
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All rasters of one patch (modality -> array) and its dates (dates table -> YYYYMMDD)."""
    rng = np.random.default_rng((seed, 0, plan.index))
    tables = dict.fromkeys(m.dates_table for m in MODALITIES.values() if m.dates_table)
    doys = {table: draw_dates(rng, plan.year, ACQUISITIONS[table]) for table in tables}
    scene = build_scene(plan, rng)
    renderer = Renderer(scene, terrain, doys, regional_shift=float(rng.normal(0.0, 4.0)))
    rasters = {key: product(renderer) for key, product in PRODUCTS.items()}
    dates = {table: to_yyyymmdd(plan.year, doy) for table, doy in doys.items()}
    return rasters, dates


def _cloudy_dates(rasters: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(dates with some cloud probability, dates) over the mask modalities that have a CLOUD band."""
    cloudy = total = 0
    for key, array in rasters.items():
        modality = MODALITIES[key]
        if modality.kind == "mask" and "CLOUD" in modality.bands:
            cloud = array[:, modality.bands.index("CLOUD")]
            cloudy += int((cloud.reshape(len(cloud), -1).max(axis=1) > 0).sum())
            total += len(cloud)
    return cloudy, total


@register_toy("flair-hub", patches=200, min_patches=len(SPLIT_DOMAINS))
def write_toy_dataset(out: Path, num_patches: int = 200, seed: int = 0) -> ToySummary:
    """Write a synthetic FLAIR-HUB tree (rasters, date tables, split CSVs) under ``out``.

    ``out`` must be absent or an empty directory; nothing is written outside it. The same seed
    (and number of patches) gives the same rasters byte for byte.
    """
    started = time.perf_counter()
    plans = plan_patches(num_patches)
    root = prepare_output(out)
    log.info("writing %d toy patches (seed %d) to %s", num_patches, seed, root)
    terrains: dict[int, Terrain] = {}
    dates: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, list[dict[str, str]]] = {split: [] for split in SPLIT_DOMAINS}
    cloudy = [0, 0]
    for plan in tqdm(plans, desc="toy patches", unit="patch", disable=None):
        if plan.roi_index not in terrains:
            terrains[plan.roi_index] = Terrain.draw(np.random.default_rng((seed, 1, plan.roi_index)))
        rasters, patch_dates = _simulate(plan, seed, terrains[plan.roi_index])
        rows[plan.split].append(write_patch(root, plan, rasters))
        cloudy = [a + b for a, b in zip(cloudy, _cloudy_dates(rasters), strict=True)]
        for table, values in patch_dates.items():
            dates.setdefault(table, {})[str(plan.patch)] = values
    for table, table_rows in dates.items():
        path = check_inside(root, dates_table_path(Path(), table))
        write_dates_table(path, {pid: [int(d) for d in values] for pid, values in table_rows.items()})
    write_splits(root, rows)
    marker = {"dataset": "toy", "generator": "shards toy", "seed": seed, "patches": num_patches}
    check_inside(root, Path(TOY_MARKER)).write_text(json.dumps(marker) + "\n")
    summary = _summarise(
        root, seed, plans, dates, cloudy[0] / max(cloudy[1], 1), time.perf_counter() - started
    )
    log.info(
        "wrote %d toy patches (%.1f MiB) in %.1f s",
        num_patches,
        summary.bytes_written / 2**20,
        summary.seconds,
    )
    return summary


def _summarise(
    root: Path,
    seed: int,
    plans: Sequence[PatchPlan],
    dates: Mapping[str, Mapping[str, np.ndarray]],
    cloudy_fraction: float,
    seconds: float,
) -> ToySummary:
    counts = {table: np.array([len(v) for v in rows.values()]) for table, rows in dates.items()}
    s2 = MODALITIES["s2"]
    return ToySummary(
        root=root,
        seed=seed,
        patches={split: sum(p.split == split for p in plans) for split in SPLIT_DOMAINS},
        domains={
            split: tuple(dict.fromkeys(p.patch.domain for p in plans if p.split == split))
            for split in SPLIT_DOMAINS
        },
        dates={table: (int(c.min()), float(c.mean()), int(c.max())) for table, c in counts.items()},
        short_s2=int((counts[str(s2.dates_table)] < (s2.num_dates or 0)).sum()),
        cloudy_fraction=cloudy_fraction,
        bytes_written=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        seconds=seconds,
    )
