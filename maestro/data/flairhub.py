"""FLAIR-HUB reader: one patch -> one sample dict of numpy arrays keyed by modality.

Which patches belong to a split comes from the split CSVs (``{root}/{split_name}/{split}.csv``)
or, without CSVs, from scanning the folder tree and assigning whole domains to splits. Every
raster is validated against the registry (band count, size, dtype, CRS, pixel size, values) and
every time series against its dates table, because a wrong array that loads fine poisons a
pretraining run silently; each problem is a :class:`~maestro.errors.DataError` naming the patch
and the file. The sample layout is documented in :mod:`maestro.sample`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from einops import rearrange
from rasterio.errors import RasterioError

from maestro.data.layout import CRS, SPLIT_NAME, PatchId, dates_table_path, split_csv_path
from maestro.data.metadata import DatesTable, load_dates_table
from maestro.data.split_reader import OnError, SplitReader
from maestro.data.splits import (  # re-exported: the split listing used to live here
    PatchEntry,
    read_split_csv,
    scan_patches,
    split_by_domain,
    write_split_csv,
)
from maestro.datasets import ReaderOptions, register_reader
from maestro.errors import DataError
from maestro.labels import LABEL_SETS
from maestro.modalities import DEFAULT_INPUTS, Modality, get_modality, resolve, with_companions
from maestro.sample import DATES, META, Sample

try:  # GDAL errors surfaced by rasterio outside RasterioError (e.g. CPLE_AppDefinedError on read)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - private module moved
    CPLE_BaseError = RasterioError

log = logging.getLogger(__name__)

__all__ = [
    "FlairHubReader",
    "PatchEntry",
    "read_raster",
    "read_split_csv",
    "scan_patches",
    "split_by_domain",
    "to_sample_layout",
    "write_split_csv",
]


_RASTER_ERRORS = (RasterioError, CPLE_BaseError, OSError)
_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
"""ROI folders hold thousands of files: stop GDAL listing them on every open."""
_PIXEL_SIZE_REL_TOL = 1e-3


# --------------------------------------------------------------------------------------- rasters


def to_sample_layout(array: np.ndarray, modality: Modality) -> np.ndarray:
    """On-disk (bands, H, W) -> sample layout: time series are date-major, so (T*C) -> (T, C)."""
    if modality.temporal:
        return rearrange(array, "(t c) h w -> t c h w", c=modality.num_bands)
    return array


def _check_structure(src: Any, modality: Modality, patch_id: str, path: Path) -> None:
    """Band count, size and dtype from the header, before any pixel is read."""
    count = src.count
    if modality.temporal:
        if count % modality.num_bands:
            raise DataError(
                f"{modality.key}: {count} bands is not a multiple of {modality.num_bands} bands per date "
                f"({', '.join(modality.bands)})",
                patch_id=patch_id,
                path=path,
            )
    elif count != modality.num_bands:
        raise DataError(
            f"{modality.key}: expected {modality.num_bands} bands ({', '.join(modality.bands)}), got {count}",
            patch_id=patch_id,
            path=path,
        )
    if (src.height, src.width) != (modality.size_px, modality.size_px):
        raise DataError(
            f"{modality.key}: expected {modality.size_px}x{modality.size_px} pixels, got {src.height}x{src.width}",
            patch_id=patch_id,
            path=path,
        )
    dtypes = set(src.dtypes)
    if dtypes != {modality.dtype}:
        raise DataError(
            f"{modality.key}: expected dtype {modality.dtype}, got {', '.join(sorted(dtypes))}",
            patch_id=patch_id,
            path=path,
        )


def _georef(src: Any, modality: Modality, patch_id: str, path: Path) -> dict[str, Any]:
    """CRS string and affine (a, b, c, d, e, f); a raster in another CRS or resolution is an error
    because its pixels would not line up with the other modalities of the patch."""
    if src.crs is None:
        raise DataError(f"{modality.key}: raster has no CRS, expected {CRS}", patch_id=patch_id, path=path)
    epsg = src.crs.to_epsg()
    crs = f"EPSG:{epsg}" if epsg is not None else src.crs.to_string()
    if crs != CRS:
        raise DataError(f"{modality.key}: CRS is {crs}, expected {CRS}", patch_id=patch_id, path=path)
    transform = tuple(float(v) for v in src.transform[:6])
    a, b, _, d, e, _ = transform
    size = modality.pixel_size_m
    square = b == 0.0 and d == 0.0 and e < 0.0
    if not (
        square
        and math.isclose(a, size, rel_tol=_PIXEL_SIZE_REL_TOL)
        and math.isclose(-e, size, rel_tol=_PIXEL_SIZE_REL_TOL)
    ):
        raise DataError(
            f"{modality.key}: transform {transform} is not a north-up grid of {size} m pixels",
            patch_id=patch_id,
            path=path,
        )
    return {"crs": crs, "transform": transform}


def _check_values(
    array: np.ndarray, modality: Modality, patch_id: str, path: Path, allow_nan: bool = False
) -> None:
    """Value checks the registry makes possible: finite floats (unless ``allow_nan``), label and
    mask ranges."""
    if not allow_nan and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(np.isnan(array)))
        raise DataError(
            f"{modality.key}: {array.size - int(np.count_nonzero(np.isfinite(array)))} non-finite values "
            f"({bad} NaN)",
            patch_id=patch_id,
            path=path,
        )
    if modality.label_set is not None:
        levels = LABEL_SETS[modality.label_set].levels
        for band, (name, level) in enumerate(zip(modality.bands, levels, strict=True)):
            top = int(array[band].max())
            if top >= level.num_values:
                raise DataError(
                    f"{modality.key}: band {name} holds value {top}, valid values are 0..{level.num_values - 1}",
                    patch_id=patch_id,
                    path=path,
                )
    max_value = modality.extra.get("max_value")
    if max_value is not None and array.size and int(array.max()) > int(max_value):  # type: ignore[call-overload]
        raise DataError(
            f"{modality.key}: value {int(array.max())} above the maximum {max_value}",
            patch_id=patch_id,
            path=path,
        )


def _describe(error: BaseException) -> str:
    """rasterio's "Read failed. See previous exception" hides GDAL's reason in ``__cause__``."""
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    return f"{text} <- {type(cause).__name__}: {cause}" if cause is not None else text


def read_raster(
    path: Path, modality: Modality | str, patch_id: str, *, allow_nan: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read and validate one GeoTIFF: ((bands, H, W) array in on-disk dtype, {crs, transform}).

    Corrupt or truncated files often open fine and only fail when pixels are decoded, so the
    pixel read is inside the same error translation as the open. ``allow_nan`` keeps NaN / inf
    pixels of float rasters (Sentinel-1 borders) for preprocessing to handle.
    """
    modality = get_modality(modality) if isinstance(modality, str) else modality
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{modality.key}: file not found", patch_id=patch_id, path=path)
    try:
        with rasterio.Env(**_GDAL_ENV), rasterio.open(path) as src:
            if src.driver != "GTiff":
                raise DataError(
                    f"{modality.key}: not a GeoTIFF (driver {src.driver})", patch_id=patch_id, path=path
                )
            _check_structure(src, modality, patch_id, path)
            georef = _georef(src, modality, patch_id, path)
            array = src.read()
    except _RASTER_ERRORS as error:
        raise DataError(
            f"{modality.key}: unreadable or corrupt GeoTIFF ({_describe(error)})",
            patch_id=patch_id,
            path=path,
        ) from error
    _check_values(array, modality, patch_id, path, allow_nan)
    return array, georef


# ------------------------------------------------------------------------------------- reader


class FlairHubReader(SplitReader):
    """Map-style access to one split of FLAIR-HUB, one validated sample per patch.

    ``reader[i]`` and ``reader.read(patch_id)`` always raise on bad data (a map-style dataset
    cannot return "nothing"); ``iter(reader)`` / :meth:`iter_samples` honour ``on_error``: with
    ``'skip'`` a bad patch is logged, counted in :attr:`skipped` and kept in
    :attr:`skipped_errors`. Dates tables are loaded once at construction, so a missing or broken
    table fails immediately instead of once per patch.

    Patches come from ``split_csv`` if given, else from ``domain_splits`` (domain -> split, the
    folder tree is scanned) if given, else from ``{root}/{split_name}/{split}.csv``. ``modalities``
    defaults to the default MAESTRO inputs plus their masks (add ``lc`` / ``lpis`` for labels). A malformed
    row of a dates table is an error of that patch only. ``allow_nan`` keeps NaN / inf pixels of
    float rasters instead of rejecting the patch (preprocessing's ``nan_policy`` handles them).
    """

    def __init__(
        self,
        root: Path,
        modalities: Iterable[str] | None = None,
        split: str = "train",
        split_name: str = SPLIT_NAME,
        split_csv: Path | None = None,
        on_error: OnError = "raise",
        domain_splits: Mapping[str, str] | None = None,
        allow_nan: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        if modalities is None:  # the default MAESTRO inputs and the masks their preprocessing reads
            modalities = with_companions(DEFAULT_INPUTS)
        self.modalities: list[Modality] = resolve(modalities)
        self.split = split
        self.on_error: OnError = on_error
        self.allow_nan = allow_nan
        self.skipped = 0
        self.skipped_errors: list[DataError] = []
        keys = [m.key for m in self.modalities]
        if split_csv is None and domain_splits is not None:
            self.source = self.root
            domains = [d for d, s in domain_splits.items() if s == split]
            if not domains:
                raise ValueError(
                    f"no domain is assigned to split {split!r} in domain_splits {dict(domain_splits)}"
                )
            patches = scan_patches(self.root, keys, domains)
        else:
            self.source = (
                Path(split_csv) if split_csv is not None else split_csv_path(self.root, split_name, split)
            )
            patches = read_split_csv(self.source, keys)
        self._patches = {p.patch_id: p for p in patches}
        self._ids = [p.patch_id for p in patches]
        self._dates: dict[str, DatesTable] = {
            table: load_dates_table(dates_table_path(self.root, table))
            for table in dict.fromkeys(m.dates_table for m in self.modalities if m.dates_table)
        }
        log.info(
            "FLAIR-HUB %s split from %s: %d patches, modalities %s", split, self.source, len(self._ids), keys
        )

    def source_state(self, patch_id: str) -> dict[str, Any]:
        """What a patch is read from, as JSON: per modality its raster path, size and mtime_ns
        (``None`` when absent), and per dates table a digest of its row (or the row's error).

        A shard build records it per patch so that a resumed build notices an edited, replaced or
        fixed source and rewrites that shard; stat-only for rasters, so checking is cheap.
        """
        entry = self._patches.get(patch_id)
        state: dict[str, Any] = {}
        for modality in self.modalities:
            relpath = None if entry is None else entry.paths.get(modality.key)
            if relpath is None:
                state[modality.key] = None
                continue
            try:
                stat = (self.root / relpath).stat()
                state[modality.key] = [str(relpath), stat.st_size, stat.st_mtime_ns]
            except OSError:
                state[modality.key] = [str(relpath), None, None]
        for name, table in self._dates.items():
            try:
                dates = table.dates_of(patch_id)
                digest = (
                    None if dates is None else hashlib.sha256(dates.astype("<i4").tobytes()).hexdigest()[:16]
                )
                state[f"dates:{name}"] = digest  # a digest: S2 rows hold ~100 dates, the record one per patch
            except DataError as error:
                state[f"dates:{name}"] = f"error: {error.problem}"
        return state

    def read(self, patch_id: str) -> Sample:
        """The sample of one patch (layout in :mod:`maestro.sample`); raises DataError on bad data."""
        entry = self._patches.get(patch_id)
        if entry is None:
            raise DataError(f"patch is not in the {self.split!r} split", patch_id=patch_id, path=self.source)
        sample: Sample = {}
        rasters: dict[str, dict[str, Any]] = {}
        for modality in self.modalities:
            relpath = entry.paths.get(modality.key)
            if relpath is None:
                continue
            array, georef = read_raster(self.root / relpath, modality, patch_id, allow_nan=self.allow_nan)
            sample[modality.key] = to_sample_layout(array, modality)
            rasters[modality.key] = {"path": str(relpath), **georef}
        self._check_companions(sample, rasters, patch_id)
        sample[DATES] = self._dates_for(sample, rasters, patch_id)
        patch = PatchId.parse(patch_id)
        sample[META] = {
            "patch_id": patch_id,
            "domain": patch.domain,
            "roi": patch.roi,
            "split": self.split,
            "rasters": rasters,
        }
        return sample

    def _check_companions(self, sample: Sample, rasters: Mapping[str, Any], patch_id: str) -> None:
        """A mask must have one date per date of the image it belongs to (``s2_mask`` vs ``s2``)."""
        for modality in self.modalities:
            image = modality.companion_of
            if modality.key not in sample or image not in sample:
                continue
            if sample[modality.key].shape[0] != sample[image].shape[0]:
                raise DataError(
                    f"{modality.key} has {sample[modality.key].shape[0]} dates but {image} "
                    f"({rasters[image]['path']}) has {sample[image].shape[0]}",
                    patch_id=patch_id,
                    path=self.root / rasters[modality.key]["path"],
                )

    def _dates_for(self, sample: Sample, rasters: Mapping[str, Any], patch_id: str) -> dict[str, np.ndarray]:
        """Dates of every present modality that has a dates table, checked against its raster."""
        dates: dict[str, np.ndarray] = {}
        for modality in self.modalities:
            if modality.key not in sample or modality.dates_table is None:
                continue
            table_path = dates_table_path(self.root, modality.dates_table)
            found = self._dates[modality.dates_table].dates_of(patch_id)
            if found is None:
                raise DataError(
                    f"{modality.key}: patch has no row in the dates table", patch_id=patch_id, path=table_path
                )
            num_dates = sample[modality.key].shape[0] if modality.temporal else 1
            if len(found) != num_dates:
                raise DataError(
                    f"{modality.key}: raster {rasters[modality.key]['path']} has {num_dates} dates but the dates "
                    f"table lists {len(found)}",
                    patch_id=patch_id,
                    path=table_path,
                )
            dates[modality.key] = found.copy()
        return dates


@register_reader("flair-hub")
def open_flairhub(options: ReaderOptions) -> FlairHubReader:
    """``shards build --dataset flair-hub``: one split of a FLAIR-HUB tree, from its split CSVs."""
    return FlairHubReader(
        options.root,
        options.modalities,
        split=options.split,
        split_name=options.split_name or SPLIT_NAME,
        split_csv=options.split_csv,
        allow_nan=options.allow_nan,
    )
