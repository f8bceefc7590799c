"""Custom dataset reader: one GeoTIFF per modality and patch -> one raw sample dict.

Sample (layout of :mod:`maestro.sample`), for a data config with inputs aerial and dem::

    aerial (4, S, S) uint8 R,G,B,NIR    dem (2, S, S) float32 DSM,DTM    (registry bands, any size S)
    label (1, S_l, S_l) uint8 class values (raw values grouped by the nomenclature)
    dates {"aerial": (1,) int32 YYYYMMDD, ...}  from patches.csv (or the config's default date)
    meta {patch_id, domain (the dataset's name), roi, split, rasters: {key: {path, crs, transform}}}

Every raster is checked against the registry and the data config: band count, a data type that
converts safely to the registry's, the size, finite values (unless ``allow_nan``), one CRS and the
same ground footprint for all rasters of a patch, and label values listed by the nomenclature.
Each failure is a :class:`~maestro.errors.DataError` naming the patch and the file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from maestro.data.custom.config import KEY, LABEL_KEY, CustomData, load_custom_data
from maestro.data.split_reader import OnError, SplitReader
from maestro.datasets import ReaderOptions, register_reader
from maestro.errors import ConfigError, DataError
from maestro.modalities import MODALITIES
from maestro.sample import DATES, META, Sample

log = logging.getLogger(__name__)

_RASTER_ERRORS = (RasterioError, OSError)
FOOTPRINT_TOLERANCE = 0.5
"""Bounds of the rasters of one patch may differ by this fraction of the coarser pixel."""


class CustomReader(SplitReader):
    """One split of a custom dataset (:class:`~maestro.data.custom.config.CustomData`)."""

    def __init__(
        self,
        data: CustomData,
        split: str = "train",
        modalities: Iterable[str] | None = None,
        on_error: OnError = "raise",
        allow_nan: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.data = data
        keys = tuple(modalities) if modalities is not None else (*data.inputs, LABEL_KEY)
        absent = [key for key in keys if key not in (*data.inputs, LABEL_KEY)]
        if absent:
            raise ConfigError(
                f"{data.path} has no {absent}; its inputs are {list(data.inputs)} and {LABEL_KEY!r}"
            )
        self.modalities = keys
        self.split = split
        self.on_error: OnError = on_error
        self.allow_nan = allow_nan
        self.skipped = 0
        self.skipped_errors: list[DataError] = []
        rows = data.split(split)
        if not rows:
            raise ConfigError(
                f"{data.root / data.config.patches} lists no patch of split {split!r} (splits: {list(data.splits)})"
            )
        self._rows = {row.patch_id: row for row in rows}
        self._ids = [row.patch_id for row in rows]
        self._classes = hashlib.sha256(repr(data.nomenclature.to_dict()).encode()).hexdigest()
        log.info("%s %s split: %d patches, modalities %s", data.config.name, split, len(self._ids), keys)

    def source_state(self, patch_id: str) -> dict[str, Any]:
        """Path, size and mtime of each raster, the patch's date and a digest of the nomenclature,
        so that a resumed shard build redoes a patch whose file, date or grouping changed."""
        row = self._rows.get(patch_id)
        if row is None:
            return {}
        state: dict[str, Any] = {"dates:patch": row.date, "classes": self._classes}
        for key in self.modalities:
            path = self.data.raster(key, patch_id)
            try:
                stat = path.stat()
                state[key] = [self._rel(path), stat.st_size, stat.st_mtime_ns]
            except OSError:
                state[key] = [self._rel(path), None, None]
        return state

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.data.root))
        except ValueError:
            return str(path)

    def read(self, patch_id: str) -> Sample:
        """The sample of one patch; raises DataError naming the patch and the file on bad data."""
        row = self._rows.get(patch_id)
        if row is None:
            raise DataError(
                f"patch is not in the {self.split!r} split", patch_id=patch_id, path=self.data.path
            )
        sample: Sample = {}
        rasters: dict[str, dict[str, Any]] = {}
        footprints: dict[str, tuple[tuple[float, ...], float, str | None]] = {}
        for key in self.modalities:
            path = self.data.raster(key, patch_id)
            array, georef, bounds = self._read_tif(key, path, patch_id)
            if key == LABEL_KEY:
                array = self._group(array, patch_id, path)
            sample[key] = array
            rasters[key] = {"path": self._rel(path), "crs": georef["crs"], "transform": georef["transform"]}
            footprints[key] = (bounds, abs(georef["transform"][0]), georef["crs"])
        self._check_footprints(footprints, patch_id)
        sample[DATES] = {
            key: np.array([row.date], dtype=np.int32) for key in self.modalities if key != LABEL_KEY
        }
        sample[META] = {
            "patch_id": patch_id,
            "domain": self.data.config.name,
            "roi": patch_id,
            "split": self.split,
            "rasters": rasters,
        }
        return sample

    def _read_tif(
        self, key: str, path: Path, patch_id: str
    ) -> tuple[np.ndarray, dict[str, Any], tuple[float, ...]]:
        modality = MODALITIES[key]
        if not path.is_file():
            raise DataError(f"{key}: file not found", patch_id=patch_id, path=path)
        size = self.data.image_size(key)
        try:
            with rasterio.open(path) as src:
                if src.count != modality.num_bands:
                    raise DataError(
                        f"{key}: expected {modality.num_bands} bands {list(modality.bands)}, got {src.count}",
                        patch_id=patch_id,
                        path=path,
                    )
                if (src.height, src.width) != (size, size):
                    raise DataError(
                        f"{key}: expected {size} x {size} px (the data config's {key} image_size, else the "
                        f"registry's), got {src.height} x {src.width}",
                        patch_id=patch_id,
                        path=path,
                    )
                dtype = np.dtype(src.dtypes[0])
                if len(set(src.dtypes)) > 1 or not np.can_cast(dtype, modality.dtype, "safe"):
                    raise DataError(
                        f"{key}: data type {', '.join(sorted(set(src.dtypes)))} does not convert safely to "
                        f"{modality.dtype}, the {key} data type",
                        patch_id=patch_id,
                        path=path,
                    )
                array = src.read().astype(modality.dtype, copy=False)
                georef = {
                    "crs": src.crs.to_string() if src.crs is not None else None,
                    "transform": tuple(float(v) for v in src.transform[:6]),
                }
                bounds = tuple(float(v) for v in src.bounds)
        except _RASTER_ERRORS as error:
            raise DataError(f"{key}: unreadable GeoTIFF ({error})", patch_id=patch_id, path=path) from error
        if np.issubdtype(array.dtype, np.floating) and not self.allow_nan and not np.isfinite(array).all():
            raise DataError(f"{key}: holds NaN or infinite values", patch_id=patch_id, path=path)
        return array, georef, bounds

    def _group(self, raw: np.ndarray, patch_id: str, path: Path) -> np.ndarray:
        classes, unknown = self.data.nomenclature.group(raw)
        if unknown:
            listed = "grouping" if self.data.nomenclature.grouping is not None else "class values"
            raise DataError(
                f"label values {unknown[:10]} are not in the nomenclature's {listed} "
                f"({self.data.root / self.data.config.nomenclature})",
                patch_id=patch_id,
                path=path,
            )
        return classes

    def _check_footprints(
        self, footprints: dict[str, tuple[tuple[float, ...], float, str | None]], patch_id: str
    ) -> None:
        """Every raster of a patch in one CRS and on one footprint (to a fraction of a pixel)."""
        first, (bounds0, pixel0, crs0) = next(iter(footprints.items()))
        for key, (bounds, pixel, crs) in footprints.items():
            path = self.data.raster(key, patch_id)
            if crs != crs0:
                raise DataError(
                    f"{key}: CRS {crs} differs from {crs0} of {self._rel(self.data.raster(first, patch_id))}",
                    patch_id=patch_id,
                    path=path,
                )
            tolerance = FOOTPRINT_TOLERANCE * max(pixel, pixel0)
            if max(abs(a - b) for a, b in zip(bounds, bounds0, strict=True)) > tolerance:
                raise DataError(
                    f"{key}: does not share the footprint of {self._rel(self.data.raster(first, patch_id))} "
                    f"(bounds {_rounded(bounds)} vs {_rounded(bounds0)}): all rasters of a patch must cover "
                    "the same ground",
                    patch_id=patch_id,
                    path=path,
                )


def _rounded(bounds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v, 2) for v in bounds)


@register_reader(KEY)
def open_custom(options: ReaderOptions) -> CustomReader:
    """``shards build --dataset custom --data-config my.yaml``: one split of the patch table."""
    if options.data_config is None:
        raise ConfigError(
            "--dataset custom reads the dataset a data config YAML describes: pass --data-config"
        )
    if options.split_csv is not None:
        raise ConfigError(
            f"--split-csv {options.split_csv}: a custom dataset's splits are the split column of its patch table"
        )
    data = load_custom_data(options.data_config)
    return CustomReader(data, options.split, options.modalities, allow_nan=options.allow_nan)
