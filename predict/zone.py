"""A zone on disk: one raster per modality (registry keys), date lists, checked before any tile runs.

Layout (only the rasters the model needs are read; see the README, "Mapping a whole zone")::

    ZONE/aerial.tif            R, G, B, NIR (registry band order), any size
    ZONE/aerial_dates.json     ["20210615"]: one date per mono-temporal raster with a date table
    ZONE/dem.tif               DSM, DTM (no dates)
    ZONE/s2.tif                T x 10 bands, date-major (band t*C + c), as in FLAIR-HUB
    ZONE/s2_dates.json         T dates (JSON list of YYYYMMDD, or s2_dates.txt: one per line)
    ZONE/s2_mask.tif           T x 2 bands (snow, cloud probability 0-100), the dates of s2
    ZONE/s1_asc.tif, s1_asc_dates.json, s1_des.tif, s1_des_dates.json, spot.tif, hist.tif, ...

A raster may be ``.tif``, ``.tiff`` or ``.vrt``. Rasters may use any metric CRS; the finest input
(aerial at default sizes) sets the zone's CRS and the output grid, the others are warped to it on
read when their CRS differs. All rasters must cover the same area, within one of their pixels; the
parts of the zone a warped raster's (rotated) footprint misses are nodata, known from the warp.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.dtypes import dtype_rev, typename_fwd
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from maestro.dates import parse_yyyymmdd
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from predict.options import check_zone
from predict.tiling import Grid

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
DATES_SUFFIXES = ("_dates.json", "_dates.txt")
_REL_TOL = 1e-6


@dataclass(frozen=True)
class ZoneRaster:
    """One raster of the zone, as seen in the zone's CRS (warped when its own CRS differs)."""

    key: str
    path: Path
    transform: Affine
    width: int
    height: int
    count: int
    """Data bands (a warp's alpha is not counted)."""
    dtype: str
    warped: bool
    dates: np.ndarray | None
    """(T,) int32 YYYYMMDD; ``None`` for rasters without a date table (dem, hist)."""

    @property
    def pixel_size(self) -> float:
        return max(abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return left, bottom, right, top


@dataclass(frozen=True)
class Zone:
    root: Path
    crs: CRS
    rasters: dict[str, ZoneRaster]
    reference: str
    """The finest input: its grid is the output grid."""
    grid: Grid


@contextlib.contextmanager
def open_in(path: Path, crs: CRS | None) -> Iterator[Any]:
    """A raster for reading in ``crs``: itself, or warped to it (nearest) when its CRS differs.

    A warped raster has one band more than the file, last: the warp's own alpha (see
    :func:`warp_alpha`). Without it the warp fills the zone outside the raster's footprint with
    zeros that read as data.
    """
    try:
        with rasterio.open(path) as src, contextlib.ExitStack() as stack:
            if src.crs is None:
                raise ConfigError(f"zone raster {path} has no CRS; assign one (e.g. EPSG:2154)")
            if crs is None or src.crs == crs:
                yield src
                return
            source = src
            if ColorInterp.alpha in src.colorinterp:  # NIR of a 4-band uint8 TIFF: data, not the warp's mask
                source = stack.enter_context(rasterio.open(_bands_as_data(src)))
            # Nodata only where every band holds the declared value, as for rasters read unwarped.
            options = {"UNIFIED_SRC_NODATA": "YES"}
            yield stack.enter_context(
                WarpedVRT(source, crs=crs, resampling=Resampling.nearest, add_alpha=True, **options)
            )
    except RasterioError as error:
        raise ConfigError(f"zone raster {path}: cannot be read ({error})") from None


def warp_alpha(dataset: Any) -> int | None:
    """The band :func:`open_in` adds to a warped raster, > 0 where the zone pixel has source data
    (inside the footprint, not declared nodata, not masked); ``None`` for a raster read as is."""
    return dataset.count if isinstance(dataset, WarpedVRT) else None


def _bands_as_data(src: Any) -> str:
    """A VRT (XML text) of ``src`` with no band marked alpha, so the warp reads every band as data."""
    kind = typename_fwd[dtype_rev[src.dtypes[0]]]
    nodata = "" if src.nodata is None else f"<NoDataValue>{src.nodata!r}</NoDataValue>"
    source = f'<SourceFilename relativeToVRT="0">{escape(src.name)}</SourceFilename>'
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{band}"><ColorInterp>Undefined</ColorInterp>{nodata}'
        f"<SimpleSource>{source}<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
        for band in src.indexes
    )
    geotransform = ", ".join(repr(value) for value in src.transform.to_gdal())
    return (
        f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">'
        f"<SRS>{escape(src.crs.to_wkt())}</SRS><GeoTransform>{geotransform}</GeoTransform>"
        f"{bands}</VRTDataset>"
    )


def find_raster(root: Path, key: str) -> Path:
    found = [root / f"{key}{suffix}" for suffix in RASTER_SUFFIXES if (root / f"{key}{suffix}").is_file()]
    if len(found) > 1:
        raise ConfigError(f"zone {root}: {[p.name for p in found]} are all rasters for {key}; keep one")
    if not found:
        raise ConfigError(
            f"zone {root} has no {key} raster: expected {root / (key + '.tif')} (or .tiff/.vrt)"
        )
    return found[0]


def read_dates(root: Path, key: str) -> np.ndarray:
    """The dates of ``key`` from ``{key}_dates.json`` (a list) or ``{key}_dates.txt`` (one per line)."""
    found = [root / f"{key}{suffix}" for suffix in DATES_SUFFIXES if (root / f"{key}{suffix}").is_file()]
    if len(found) > 1:
        raise ConfigError(
            f"zone {root}: both {found[0].name} and {found[1].name} give the dates of {key}; keep one"
        )
    if not found:
        raise ConfigError(
            f"zone {root}: {key} needs its acquisition dates in {key}_dates.json (a JSON list of YYYYMMDD)"
        )
    path = found[0]
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix == ".json" else text.replace(",", " ").split()
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{path}: expected a non-empty list of YYYYMMDD dates")
    try:
        return np.array([parse_yyyymmdd(v) for v in values], dtype=np.int32)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def _dates_for(root: Path, key: str, cache: dict[str, np.ndarray]) -> np.ndarray | None:
    entry = MODALITIES[key]
    owner = entry.companion_of or key
    if MODALITIES[owner].dates_table is None:
        return None
    if owner not in cache:
        cache[owner] = read_dates(root, owner)
    dates = cache[owner]
    if not MODALITIES[owner].temporal and len(dates) != 1:
        raise ConfigError(
            f"zone {root}: {owner} is mono-temporal; its dates file must hold one date, not {len(dates)}"
        )
    return dates


def _check_bands(raster: ZoneRaster) -> None:
    entry = MODALITIES[raster.key]
    per_date = entry.num_bands
    expected = per_date * (len(raster.dates) if entry.temporal and raster.dates is not None else 1)
    if raster.count != expected:
        dates = f" x {len(raster.dates)} dates" if entry.temporal and raster.dates is not None else ""
        raise ConfigError(
            f"zone raster {raster.path}: {raster.count} bands, expected {expected} "
            f"({per_date} bands {entry.bands}{dates}, date-major)"
        )
    if raster.dtype != entry.dtype:
        log.warning(
            "%s: %s values, FLAIR-HUB %s rasters are %s; scaling assumes the FLAIR-HUB value range",
            raster.path.name,
            raster.dtype,
            raster.key,
            entry.dtype,
        )


def _check_north_up(raster: ZoneRaster) -> None:
    transform = raster.transform
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise ConfigError(
            f"zone raster {raster.path}: not north-up (transform {tuple(transform)[:6]}); warp it first"
        )


def _check_bounds(rasters: Mapping[str, ZoneRaster], reference: ZoneRaster) -> None:
    """Every raster covers the reference's area, each side within one pixel of the coarser raster."""
    names = ("left", "bottom", "right", "top")
    for raster in rasters.values():
        tolerance = max(raster.pixel_size, reference.pixel_size) * (1 + 1e-6)
        for name, own, ref in zip(names, raster.bounds, reference.bounds, strict=True):
            if abs(own - ref) > tolerance:
                raise ConfigError(
                    f"zone rasters do not cover the same area: {raster.path.name} spans "
                    f"{_fmt(raster.bounds)} but {reference.path.name} spans {_fmt(reference.bounds)} "
                    f"({name} edges {abs(own - ref):.2f} m apart, more than one pixel, {tolerance:.2f} m)"
                )


def _fmt(bounds: Sequence[float]) -> str:
    left, bottom, right, top = bounds
    return f"x {left:.2f}..{right:.2f}, y {bottom:.2f}..{top:.2f}"


def output_grid(reference: ZoneRaster, crs: CRS, pixel: float) -> Grid:
    """The reference raster's own grid when its pixel is the label pixel; else that pixel over its area."""
    if abs(reference.pixel_size - pixel) <= _REL_TOL * pixel:
        return Grid(reference.transform, reference.width, reference.height, crs)
    left, bottom, right, top = reference.bounds
    width, height = max(1, round((right - left) / pixel)), max(1, round((top - bottom) / pixel))
    log.warning(
        "%s has %.3f m pixels; the map uses the model's label pixel, %.3f m (%d x %d)",
        reference.path.name,
        reference.pixel_size,
        pixel,
        width,
        height,
    )
    return Grid(Affine(pixel, 0.0, left, 0.0, -pixel, top), width, height, crs)


def _metric_crs(path: Path, crs: CRS) -> CRS:
    if not crs.is_projected or crs.linear_units_factor[1] != 1.0:
        raise ConfigError(
            f"zone raster {path}: CRS {crs.to_string()} is not in metres; warp the zone to a metric "
            "projected CRS (e.g. EPSG:2154) first"
        )
    return crs


def open_zone(
    root: str | Path, keys: Sequence[str], input_pixel_m: Mapping[str, float], label_pixel_m: float
) -> Zone:
    """Find, read the headers of and check the rasters ``keys`` of a zone (no pixel is read).

    ``input_pixel_m`` gives the ground pixel the model reads per input; the finest one is the
    reference. A raster at another resolution is resampled on read (nearest), with a warning.
    """
    root = Path(root)
    check_zone(root)
    reference_key = min(input_pixel_m, key=lambda k: input_pixel_m[k])
    ordered = [reference_key, *(k for k in keys if k != reference_key)]
    paths = {key: find_raster(root, key) for key in ordered}
    with open_in(paths[reference_key], None) as src:
        crs = _metric_crs(paths[reference_key], src.crs)
    dates_cache: dict[str, np.ndarray] = {}
    rasters: dict[str, ZoneRaster] = {}
    for key in ordered:
        path = paths[key]
        with open_in(path, crs) as src:
            warped = warp_alpha(src) is not None
            raster = ZoneRaster(
                key,
                path,
                src.transform,
                src.width,
                src.height,
                src.count - warped,
                src.dtypes[0],
                warped,
                _dates_for(root, key, dates_cache),
            )
        _check_north_up(raster)
        _check_bands(raster)
        rasters[key] = raster
        expected = input_pixel_m.get(key, input_pixel_m.get(MODALITIES[key].companion_of or "", 0.0))
        if expected and abs(raster.pixel_size - expected) > 1e-3 * expected:
            log.warning(
                "%s: %.3f m pixels but the model reads %s at %.3f m: tiles are resampled (nearest)",
                path.name,
                raster.pixel_size,
                key,
                expected,
            )
    _check_bounds(rasters, rasters[reference_key])
    grid = output_grid(rasters[reference_key], crs, label_pixel_m)
    log.info(
        "zone %s: %s, %d x %d pixels of %.2f m (%.4g km2), CRS %s",
        root,
        ", ".join(rasters),
        grid.width,
        grid.height,
        grid.pixel_size,
        grid.area_km2,
        crs.to_string(),
    )
    return Zone(root, crs, rasters, reference_key, grid)
