"""``predict``'s output files: the class map and the probabilities, written strip by strip."""

from __future__ import annotations

import warnings

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from predict.tiling import Grid
from predict.writing import GDAL_ENV, MapWriter

NAMES = ("a", "b", "c")
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def test_uint8_probabilities_are_0_where_the_map_is_nodata_without_a_cast_warning(tmp_path) -> None:
    grid = Grid(Affine(0.2, 0, 700_000, 0, -0.2, 6_600_000), 16, 8, CRS.from_epsg(2154))
    classes = np.zeros((8, 16), np.uint8)
    probabilities = np.full((3, 8, 16), 1 / 3, np.float32)
    classes[2:4, 5:9], probabilities[:, 2:4, 5:9] = 255, np.nan  # nodata, as predict.engine.classify gives it
    out = tmp_path / "map.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" from NaN
        with rasterio.Env(**GDAL_ENV), MapWriter(out, grid, NAMES, COLOURS, {}, "uint8") as writer:
            writer.write(0, 0, classes, probabilities)
            writer.commit()
    with rasterio.open(tmp_path / "map_probabilities.tif") as src:
        values = src.read()
    assert (values[:, 2:4, 5:9] == 0).all()
    assert (values[:, :2] == 85).all() and (values[:, 4:] == 85).all()
