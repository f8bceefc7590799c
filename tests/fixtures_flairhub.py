"""Writes a tiny FLAIR-HUB tree (real GeoTIFFs, dates GeoPackages, split CSVs) for tests.

Everything is derived from the modality registry, so a new modality is covered without touching
this file, and tests can rewrite single rasters or dates to build bad inputs. Independent from
``maestro.data.toy`` on purpose: the reader's tests must not depend on the generator they help
validate.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import rasterio
from rasterio.transform import Affine

from maestro.data.flairhub import PatchEntry, write_split_csv
from maestro.data.layout import (
    CRS,
    PATCH_SIZE_M,
    SPLIT_NAME,
    PatchId,
    dates_table_path,
    raster_relpath,
    split_csv_path,
)
from maestro.data.metadata import write_dates_table
from maestro.labels import LABEL_SETS
from maestro.modalities import Modality, get_modality, resolve


def roi_origin(roi: str) -> tuple[float, float]:
    """Deterministic upper-left corner of an ROI in Lambert-93 (patches tile it by row / col)."""
    code = zlib.crc32(roi.encode())
    return 600_000.0 + (code % 1000) * 1024.0, 6_900_000.0 - (code // 1000 % 1000) * 1024.0


def patch_transform(patch_id: str, modality: Modality) -> Affine:
    """Affine of one patch: every modality covers the same 102.4 m square at its own pixel size."""
    patch = PatchId.parse(patch_id)
    x0, y0 = roi_origin(patch.roi)
    size = modality.pixel_size_m
    return Affine(size, 0.0, x0 + patch.col * PATCH_SIZE_M, 0.0, -size, y0 - patch.row * PATCH_SIZE_M)


def random_raster(modality: Modality, rng: np.random.Generator, num_dates: int = 1) -> np.ndarray:
    """On-disk (bands, H, W) array of the registry's dtype with values the reader accepts."""
    bands = modality.num_bands * (num_dates if modality.temporal else 1)
    shape = (bands, modality.size_px, modality.size_px)
    dtype = np.dtype(modality.dtype)
    if modality.label_set is not None:
        levels = LABEL_SETS[modality.label_set].levels
        return np.stack([rng.integers(0, lv.num_values, shape[1:]) for lv in levels]).astype(dtype)
    if "max_value" in modality.extra:
        return rng.integers(0, int(modality.extra["max_value"]) + 1, shape).astype(dtype)  # type: ignore[call-overload]
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(1e-3, 500.0, shape).astype(dtype)
    return rng.integers(0, min(int(np.iinfo(dtype).max), 10_000) + 1, shape).astype(dtype)


def write_geotiff(path: Path, array: np.ndarray, transform: Affine, crs: str | None = CRS) -> None:
    """One uncompressed GeoTIFF holding ``array`` (bands, H, W) in its own dtype."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def random_dates(rng: np.random.Generator, num_dates: int, year: int = 2021) -> list[int]:
    """Sorted distinct ``YYYYMMDD`` dates within one year."""
    days = np.sort(rng.choice(365, size=num_dates, replace=False))
    as_dates = np.datetime64(f"{year}-01-01") + days.astype("timedelta64[D]")
    return [int(str(d).replace("-", "")) for d in as_dates]


@dataclass
class FlairHubTree:
    """What was written, so tests can compare against it and break parts of it."""

    root: Path
    modalities: tuple[str, ...]
    splits: dict[str, list[PatchEntry]]
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """patch_id -> modality -> on-disk (bands, H, W) array."""
    dates: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """dates table -> patch_id -> YYYYMMDD dates."""

    def path(self, patch_id: str, key: str) -> Path:
        return self.root / raster_relpath(get_modality(key), PatchId.parse(patch_id))

    def csv(self, split: str) -> Path:
        return split_csv_path(self.root, SPLIT_NAME, split)

    def table(self, key: str) -> Path:
        """The dates GeoPackage a modality reads (masks share their image's table)."""
        return dates_table_path(self.root, str(get_modality(key).dates_table))

    def write_raster(
        self,
        patch_id: str,
        key: str,
        array: np.ndarray,
        *,
        crs: str | None = CRS,
        transform: Affine | None = None,
    ) -> None:
        """(Re)write one raster, e.g. with a wrong shape, dtype or values."""
        modality = get_modality(key)
        write_geotiff(self.path(patch_id, key), array, transform or patch_transform(patch_id, modality), crs)
        self.arrays.setdefault(patch_id, {})[key] = array

    def write_dates(self) -> None:
        """(Re)write every dates table from :attr:`dates` (after a test edited it)."""
        for table, rows in self.dates.items():
            write_dates_table(dates_table_path(self.root, table), rows)

    def write_csvs(self) -> None:
        for split, patches in self.splits.items():
            write_split_csv(self.csv(split), patches, self.modalities)


def write_flairhub_tree(
    root: Path,
    modalities: Iterable[str],
    splits: Mapping[str, Sequence[str]],
    *,
    num_dates: int = 3,
    missing: Mapping[str, Iterable[str]] | None = None,
    seed: int = 0,
) -> FlairHubTree:
    """Write rasters, dates tables and split CSVs for ``splits`` (split -> patch ids).

    Time series get ``num_dates`` dates, plus one on every other patch so lengths vary; modalities
    sharing a dates table (an image and its mask) get the same dates. ``missing`` maps a patch id to
    modalities it lacks (no file, empty CSV cell).
    """
    entries = resolve(modalities)
    rng = np.random.default_rng(seed)
    missing = {pid: set(keys) for pid, keys in (missing or {}).items()}
    tree = FlairHubTree(Path(root), tuple(m.key for m in entries), {})
    tree.dates = {m.dates_table: {} for m in entries if m.dates_table}
    index = 0
    for split, patch_ids in splits.items():
        tree.splits[split] = []
        for patch_id in patch_ids:
            present = [m for m in entries if m.key not in missing.get(patch_id, set())]
            lengths = {table: (num_dates + index % 2) for table in tree.dates}
            for modality in present:
                length = lengths[modality.dates_table] if modality.temporal and modality.dates_table else 1
                tree.write_raster(patch_id, modality.key, random_raster(modality, rng, length))
                if modality.dates_table and patch_id not in tree.dates[modality.dates_table]:
                    count = length if modality.temporal else 1
                    tree.dates[modality.dates_table][patch_id] = random_dates(rng, count)
            paths = {
                m.key: PurePosixPath(raster_relpath(m, PatchId.parse(patch_id)).as_posix()) for m in present
            }
            tree.splits[split].append(PatchEntry(patch_id, paths))
            index += 1
    tree.write_dates()
    tree.write_csvs()
    return tree
