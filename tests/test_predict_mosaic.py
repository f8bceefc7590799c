"""Mosaics of ``predict``: VRTs over unit files read back as the whole map, the COG, STAC Items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.crs import CRS

from predict.mosaic import cog_from_vrt, place, stac_item, union_grid, write_vrt
from predict.tiling import Grid
from predict.units import plan_units

CRS_L93 = CRS.from_epsg(2154)
COLOURS = {0: (10, 20, 30, 255), 1: (200, 100, 0, 255), 2: (0, 255, 0, 255)}


def _grid(width: int, height: int, left: float = 700_000.0, top: float = 6_600_000.0) -> Grid:
    return Grid(Affine(0.2, 0, left, 0, -0.2, top), width, height, CRS_L93)


def _write(path: Path, grid: Grid, values: np.ndarray, nodata: float | None = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff", width=grid.width, height=grid.height, count=values.shape[0], dtype=values.dtype.name
    )
    with rasterio.open(path, "w", crs=grid.crs, transform=grid.transform, nodata=nodata, **profile) as dst:
        dst.write(values)
        if values.dtype == np.uint8 and values.shape[0] == 1:
            dst.write_colormap(1, COLOURS)
        dst.set_band_description(1, "class")
        dst.update_tags(task="lc", class_0="water")
    return path


def _units(root: Path, grid: Grid, rng: np.random.Generator, bands: int = 1, dtype: str = "uint8"):
    full = (rng.integers(0, 3, (bands, grid.height, grid.width))).astype(dtype)
    sources = []
    for unit in plan_units("z", grid, 256):
        sub = unit.grid(grid)
        part = full[:, unit.row : unit.row + unit.height, unit.col : unit.col + unit.width]
        sources.append(place(grid, _write(root / "z" / f"{unit.name}.tif", sub, part), sub))
    return full, sources


def test_a_zone_vrt_reads_back_as_the_whole_map_with_its_colours_and_tags(tmp_path) -> None:
    grid = _grid(600, 300)
    full, sources = _units(tmp_path, grid, np.random.default_rng(0))
    assert len(sources) == 6 and sources[4].col == 256 and sources[4].row == 256
    vrt = write_vrt(tmp_path / "z.vrt", grid, sources)
    with rasterio.open(vrt) as src:
        assert (src.width, src.height, src.crs, src.transform) == (600, 300, CRS_L93, grid.transform)
        np.testing.assert_array_equal(src.read(), full)
        assert src.nodata == 255 and src.colormap(1)[1] == (200, 100, 0, 255)
        assert src.tags()["class_0"] == "water" and src.descriptions == ("class",)
    # relative paths: the folder can move
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "_moved"))
    with rasterio.open(moved / "z.vrt") as src:
        np.testing.assert_array_equal(src.read(), full)


def test_the_cog_of_a_vrt_has_the_same_pixels_and_overviews(tmp_path) -> None:
    grid = _grid(600, 520)
    full, sources = _units(tmp_path, grid, np.random.default_rng(1))
    out = cog_from_vrt(write_vrt(tmp_path / "z.vrt", grid, sources), tmp_path / "map.tif")
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), full)
        assert src.overviews(1) and src.colormap(1)[2] == (0, 255, 0, 255) and src.tags()["task"] == "lc"
        assert src.profile["compress"].lower() == "deflate" and src.profile["blockxsize"] == 512
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_float16_probabilities_keep_nan_and_half_precision(tmp_path) -> None:
    grid = _grid(300, 200)
    values = np.random.default_rng(2).random((2, 200, 300)).astype(np.float16).astype(np.float32)
    values[:, :5, :5] = np.nan
    sources = []
    for unit in plan_units("z", grid, 256):
        sub = unit.grid(grid)
        part = values[:, unit.row : unit.row + unit.height, unit.col : unit.col + unit.width]
        sources.append(place(grid, _write(tmp_path / "z" / f"{unit.name}_p.tif", sub, part, np.nan), sub))
    out = cog_from_vrt(write_vrt(tmp_path / "p.vrt", grid, sources), tmp_path / "p.tif", "float16")
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), values)
        assert src.tags(1, "IMAGE_STRUCTURE").get("NBITS") == "16"


def test_a_mosaic_of_zones_places_each_zone_and_lets_nodata_show_what_is_under(tmp_path) -> None:
    a, b = _grid(100, 50), _grid(100, 50, left=700_000.0 + 0.2 * 60, top=6_600_000.0 - 0.2 * 30)
    va = np.full((1, 50, 100), 1, np.uint8)
    vb = np.full((1, 50, 100), 2, np.uint8)
    vb[0, :10, :10] = 255
    grid = union_grid([a, b])
    assert (grid.width, grid.height) == (160, 80)
    sources = [place(grid, _write(tmp_path / n, g, v), g) for n, g, v in (("a.tif", a, va), ("b.tif", b, vb))]
    with rasterio.open(write_vrt(tmp_path / "mosaic.vrt", grid, sources, skip_nodata=True)) as src:
        out = src.read(1)
    assert out[0, 0] == 1 and out[79, 159] == 2 and out[79, 0] == 255
    assert out[30, 60] == 1 and out[40, 70] == 2  # b's nodata corner shows a, b covers a elsewhere


def test_the_stac_item_has_footprint_projection_dates_model_and_class_table(tmp_path) -> None:
    grid = _grid(600, 300)
    item = stac_item(
        "D033",
        grid,
        [np.array([20210615]), np.array([20210110, 20210903])],
        {"source": "model folder tiny", "id": "abc"},
        ("water", "crops"),
        ((0, 0, 255), (255, 200, 0)),
        {
            "map": ("./D033.vrt", pystac.MediaType.XML),
            "probabilities": ("./D033_probabilities.vrt", "application/xml"),
        },
        255,
    )
    data = json.loads(json.dumps(item.to_dict(include_self_link=False)))
    back = pystac.Item.from_dict(data)
    assert back.id == "D033" and back.properties["maestro:model"]["id"] == "abc"
    assert back.properties["start_datetime"].startswith("2021-01-10") and back.properties[
        "end_datetime"
    ].startswith("2021-09-03")
    west, south, east, north = back.bbox
    assert (
        2.0 < west < east < 4.0 and 46.0 < south < north < 48.0
    )  # Lambert-93 (700 km, 6600 km): central France
    projection = back.ext.proj
    assert projection.epsg == 2154 and projection.shape == [300, 600]
    assert projection.transform[:3] == [0.2, 0.0, 700_000.0]
    classes = back.assets["map"].ext.classification.classes
    assert [(c.value, c.name, c.color_hint) for c in classes[:2]] == [
        (0, "water", "0000FF"),
        (1, "crops", "FFC800"),
    ]
    assert classes[-1].value == 255 and classes[-1].nodata
    assert back.assets["map"].href == "./D033.vrt" and "data" in back.assets["probabilities"].roles
