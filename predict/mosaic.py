"""The products built from finished units: VRT indexes, the single-map COG, STAC Items.

At country scale a zone's product is its folder of unit COGs (DEFLATE, with overviews, which a
zoomed-out read of the VRT uses) with a VRT index over them (``{zone}.vrt``): every rank writes its units in parallel and nothing is copied again,
whereas one COG per zone would be re-read, re-written and given overviews by one process, serially,
after every rank has finished (tens of minutes for a department). GDAL and QGIS open the VRT as one raster.
``mosaic.vrt`` indexes the zones' VRTs the same way (one per CRS when zones use several). In
single-map mode (``--zone Z --out map.tif``) the zone's VRT is copied into one COG with overviews,
the map ``predict`` has always written. The VRTs carry the units' colour table, band names and
metadata and name their sources by relative paths, so an output folder can be moved.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pystac
import rasterio
from affine import Affine
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import transform_geom

from maestro.labels import RGB
from predict.options import ProbabilityType
from predict.tiling import Grid
from predict.writing import write_cog

log = logging.getLogger(__name__)

VRT_TYPES = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class Source:
    """One raster placed in a mosaic: its file and where its top-left pixel falls (may be fractional
    when zones' grids are not aligned; GDAL then resamples it, nearest)."""

    path: Path
    col: float
    row: float
    width: int
    height: int


def place(grid: Grid, path: Path, sub: Grid) -> Source:
    """``sub`` (a unit's or zone's grid) inside ``grid``, both north-up with the same pixel."""
    col, row = ~grid.transform @ (sub.transform.c, sub.transform.f)
    col, row = (round(v) if abs(v - round(v)) < 1e-6 else v for v in (col, row))
    return Source(path, col, row, sub.width, sub.height)


def union_grid(grids: Sequence[Grid]) -> Grid:
    """The smallest grid (of the first grid's pixel and CRS) covering every one of ``grids``."""
    pixel = grids[0].pixel_size
    bounds = [g.window_bounds(0, 0, g.height, g.width) for g in grids]
    left, top = min(b[0] for b in bounds), max(b[3] for b in bounds)
    right, bottom = max(b[2] for b in bounds), min(b[1] for b in bounds)
    width, height = math.ceil((right - left) / pixel - 1e-6), math.ceil((top - bottom) / pixel - 1e-6)
    return Grid(Affine(pixel, 0.0, left, 0.0, -pixel, top), width, height, grids[0].crs)


def _number(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)


def _band_xml(src: Any, band: int, sources: str) -> str:
    kind = VRT_TYPES[src.dtypes[band - 1]]
    parts = [f'<VRTRasterBand dataType="{kind}" band="{band}">']
    if src.nodata is not None:
        parts.append(f"<NoDataValue>{_number(src.nodata)}</NoDataValue>")
    if src.descriptions[band - 1]:
        parts.append(f"<Description>{escape(src.descriptions[band - 1])}</Description>")
    try:
        colours = src.colormap(band)
    except ValueError:  # no colour table
        colours = None
    if colours:
        parts.append("<ColorInterp>Palette</ColorInterp><ColorTable>")
        parts += [
            '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*colours.get(v, (0, 0, 0, 0)))
            for v in range(max(colours) + 1)
        ]
        parts.append("</ColorTable>")
    parts.append(sources)
    parts.append("</VRTRasterBand>")
    return "".join(parts)


def write_vrt(path: Path, grid: Grid, sources: Sequence[Source], *, skip_nodata: bool = False) -> Path:
    """A VRT of ``grid`` over ``sources`` (all alike: bands, types, colours of the first), written
    atomically. ``skip_nodata``: sources' nodata pixels let earlier sources show (overlapping zones)."""
    with rasterio.open(sources[0].path) as src:
        tags = src.tags()
        nodata = src.nodata
        bands = []
        for band in range(1, src.count + 1):
            items = []
            for source in sources:
                relative = os.path.relpath(source.path, path.parent)
                kind = "ComplexSource" if skip_nodata and nodata is not None else "SimpleSource"
                extra = f"<NODATA>{_number(nodata)}</NODATA>" if kind == "ComplexSource" else ""
                items.append(
                    f'<{kind}><SourceFilename relativeToVRT="1">{escape(relative)}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{source.width}" ySize="{source.height}"/>'
                    f'<DstRect xOff="{source.col}" yOff="{source.row}" xSize="{source.width}" '
                    f'ySize="{source.height}"/>{extra}</{kind}>'
                )
            bands.append(_band_xml(src, band, "".join(items)))
    metadata = "".join(f"<MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in tags.items())
    geotransform = ", ".join(repr(v) for v in grid.transform.to_gdal())
    text = (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
        f"<SRS>{escape(grid.crs.to_wkt())}</SRS><GeoTransform>{geotransform}</GeoTransform>"
        f"<Metadata>{metadata}</Metadata>{''.join(bands)}</VRTDataset>\n"
    )
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def cog_from_vrt(vrt: Path, out: Path, probability_type: ProbabilityType | None = None) -> Path:
    """One Cloud-Optimised GeoTIFF of the VRT's pixels with overviews (mode-resampled classes,
    nearest probabilities), published by renaming: it appears complete or not at all."""
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.cog.tif")
    try:
        write_cog(vrt, temporary, probability_type)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def _iso(yyyymmdd: int, end: bool) -> dt.datetime:
    day = dt.datetime.strptime(str(int(yyyymmdd)), "%Y%m%d").replace(tzinfo=dt.UTC)
    return day + dt.timedelta(days=1, microseconds=-1) if end else day


def stac_item(
    name: str,
    grid: Grid,
    dates: Sequence[np.ndarray],
    model: Mapping[str, str],
    classes: Sequence[str],
    colours: Sequence[RGB],
    assets: Mapping[str, tuple[str, str]],
    nodata: int,
) -> pystac.Item:
    """A STAC Item for one map: footprint and bbox in WGS 84, projection (CRS, shape, transform),
    the inputs' date range, the model, the class table, and ``assets`` (key -> (relative href,
    media type)); a catalogue or QGIS lists the map with its legend without a side file."""
    left, bottom, right, top = grid.window_bounds(0, 0, grid.height, grid.width)
    ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    footprint = transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, precision=7)
    xs, ys = zip(*footprint["coordinates"][0], strict=True)
    days = np.concatenate([np.asarray(d).ravel() for d in dates]) if dates else np.array([])
    start, end = (_iso(days.min(), False), _iso(days.max(), True)) if days.size else (None, None)
    item = pystac.Item(
        id=name,
        geometry=footprint,
        bbox=[min(xs), min(ys), max(xs), max(ys)],
        datetime=None if start else dt.datetime.now(dt.UTC),
        start_datetime=start,
        end_datetime=end,
        properties={"maestro:model": dict(model)},
    )
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg()
    projection.apply(
        epsg=epsg,
        wkt2=None if epsg else grid.crs.to_wkt(),
        shape=[grid.height, grid.width],
        transform=list(grid.transform)[:6],
    )
    table = [
        Classification.create(value=v, name=n, color_hint="{:02X}{:02X}{:02X}".format(*colours[v][:3]))
        for v, n in enumerate(classes)
    ]
    table.append(Classification.create(value=nodata, name="nodata", nodata=True))
    for key, (href, media_type) in assets.items():
        roles = ["data"] if key == "map" else ["data", "probabilities"]
        asset = pystac.Asset(href=href, media_type=media_type, roles=roles, title=key)
        item.add_asset(key, asset)
        if key == "map":
            ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=table)
    return item
