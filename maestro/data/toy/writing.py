"""Writing a toy patch to disk: GeoTIFFs, split CSVs, and paths kept inside the output folder."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from maestro.data.layout import CRS, PATCH_ID_COLUMN, PATCH_SIZE_M, SPLIT_NAME, raster_relpath, split_csv_path
from maestro.data.toy.plan import PatchPlan
from maestro.datasets import DEFAULT_DATASET, get_dataset
from maestro.modalities import MODALITIES, Modality


def _transform(modality: Modality, origin: tuple[float, float]) -> Affine:
    """Same footprint for every modality: the pixel size is the 102.4 m patch over the raster size."""
    pixel = PATCH_SIZE_M / modality.size_px
    assert math.isclose(pixel, modality.pixel_size_m, rel_tol=1e-6), modality.key
    return Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])


def _write_raster(path: Path, array: np.ndarray, modality: Modality, transform: Affine) -> None:
    """GeoTIFF with DEFLATE and the predictor that suits the dtype; time series stay date-major."""
    bands = array.reshape(-1, *array.shape[-2:]).astype(modality.dtype, copy=False)
    floating = np.issubdtype(bands.dtype, np.floating)
    profile = {
        "driver": "GTiff",
        "dtype": modality.dtype,
        "count": bands.shape[0],
        "height": bands.shape[1],
        "width": bands.shape[2],
        "crs": CRS,
        "transform": transform,
        "compress": "deflate",
        "predictor": 3 if floating else 2,
        "zlevel": 6,
        "interleave": "band" if modality.temporal else "pixel",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        per_date = bands.shape[0] // modality.num_bands
        names = (
            modality.bands
            if per_date == 1
            else [f"{b}_t{t}" for t in range(per_date) for b in modality.bands]
        )
        dst.descriptions = tuple(names)


def check_inside(root: Path, relpath: Path) -> Path:
    """Resolve a generated path and refuse anything that would land outside the output folder."""
    path = (root / relpath).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"refusing to write {path}: outside the output directory {root}")
    return path


def prepare_output(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"toy dataset output {out} exists and is not an empty directory; choose a new path"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def write_splits(root: Path, rows: Mapping[str, list[dict[str, str]]]) -> None:
    columns = [PATCH_ID_COLUMN, *get_dataset(DEFAULT_DATASET).modalities]
    for split, split_rows in rows.items():
        path = check_inside(root, split_csv_path(Path(), SPLIT_NAME, split))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(split_rows)


def write_patch(root: Path, plan: PatchPlan, rasters: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Write every raster of one patch; returns its split-CSV row (patch id + relative paths)."""
    row = {PATCH_ID_COLUMN: str(plan.patch)}
    for key, array in rasters.items():
        modality = MODALITIES[key]
        relpath = raster_relpath(modality, plan.patch)
        _write_raster(check_inside(root, relpath), array, modality, _transform(modality, plan.origin))
        row[key] = relpath.as_posix()
    return row
