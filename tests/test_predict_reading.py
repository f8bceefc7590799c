"""What ``predict`` counts as nodata in a zone's rasters: declared nodata, a real mask band, never a
data band, and where a raster warped from another CRS does not reach."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from predict_fixtures import LABEL_PIXEL, write_raster, write_tiny_model, write_zone
from rasterio.enums import MaskFlags, Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.warp import transform as warp_transform

from predict.model import PredictModel, load_model
from predict.options import PredictOptions
from predict.run import predict_zone

pytestmark = pytest.mark.usefixtures("single_thread")

BLOCK = np.s_[10:20, 30:45]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> PredictModel:
    folder, _ = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    return load_model(str(folder))


def _zone_with_aerial(root: Path, change) -> Path:
    """A 2 x 2 tile zone whose aerial raster is rewritten by ``change(values, transform)``."""
    zone = write_zone(root, tiles=(2, 2))
    with rasterio.open(zone / "aerial.tif") as src:
        values, transform = src.read(), src.transform
    change(zone / "aerial.tif", values, transform)
    return zone


def _map(model: PredictModel, zone: Path, out: Path) -> np.ndarray:
    predict_zone(model, zone, out, PredictOptions(overlap=0.0, progress=False), "cpu")
    with rasterio.open(out) as src:
        return src.read(1)


def test_nir_of_an_rgba_tiff_is_data_not_an_alpha_mask(model, tmp_path) -> None:
    def nir_zero(path: Path, values: np.ndarray, transform) -> None:
        values[3][BLOCK] = 0
        write_raster(path, values, transform)  # GDAL's default for 4-band uint8: band 4 is alpha

    zone = _zone_with_aerial(tmp_path / "zone", nir_zero)
    with rasterio.open(zone / "aerial.tif") as src:
        assert MaskFlags.alpha in src.mask_flag_enums[0] and src.nodata is None
        assert (src.read(4)[BLOCK] == 0).all()
    classes = _map(model, zone, tmp_path / "map.tif")
    assert not (classes == 255).any()


def test_a_per_dataset_mask_band_marks_nodata(model, tmp_path) -> None:
    def masked(path: Path, values: np.ndarray, transform) -> None:
        write_raster(path, values, transform)
        with rasterio.open(path, "r+") as dst:
            mask = np.full(values.shape[1:], 255, np.uint8)
            mask[BLOCK] = 0
            dst.write_mask(mask)

    zone = _zone_with_aerial(tmp_path / "zone", masked)
    with rasterio.open(zone / "aerial.tif") as src:
        assert src.mask_flag_enums[0] == [MaskFlags.per_dataset]
    classes = _map(model, zone, tmp_path / "map.tif")
    expected = np.zeros(classes.shape, bool)
    expected[BLOCK] = True
    np.testing.assert_array_equal(classes == 255, expected)


def test_declared_nodata_marks_a_pixel_only_when_every_band_holds_it(model, tmp_path) -> None:
    def dark(path: Path, values: np.ndarray, transform) -> None:
        values[2][BLOCK] = 0  # a dark pixel: blue is 0, the other bands are not
        values[:, 40:50, 5:12] = 0  # a true hole: every band is 0
        write_raster(path, values, transform, nodata=0)

    zone = _zone_with_aerial(tmp_path / "zone", dark)
    classes = _map(model, zone, tmp_path / "map.tif")
    expected = np.zeros(classes.shape, bool)
    expected[40:50, 5:12] = True
    np.testing.assert_array_equal(classes == 255, expected)


def test_a_non_finite_value_in_any_band_marks_nodata(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(2, 2))
    with rasterio.open(zone / "dem.tif") as src:
        values, transform = src.read(), src.transform
    values[1][BLOCK] = np.nan  # DTM only; the DSM is finite
    write_raster(zone / "dem.tif", values, transform, nodata=float("nan"))
    classes = _map(model, zone, tmp_path / "map.tif")
    expected = np.zeros(classes.shape, bool)
    expected[BLOCK] = True
    np.testing.assert_array_equal(classes == 255, expected)


UTM = "EPSG:32629"
"""A CRS rotated by about 9 degrees from the fixtures' Lambert-93 at their origin (3 degrees E)."""


def _rotated_dem(zone: Path) -> Affine:
    """Rewrite the zone's dem in :data:`UTM` as a square of its own grid whose footprint, warped back
    to the zone's CRS, spans the zone's bounds: the rotation leaves the zone's corners outside it.
    No nodata is declared. Returns the square's transform."""
    with rasterio.open(zone / "dem.tif") as src:
        values, src_transform, src_crs, bounds = src.read(), src.transform, src.crs, src.bounds
    (cx,), (cy,) = warp_transform(
        src_crs, UTM, [(bounds.left + bounds.right) / 2], [(bounds.bottom + bounds.top) / 2]
    )
    side = bounds.right - bounds.left
    for _ in range(3):  # shrink until the warped square's bounding box is the zone's
        left, _, right, _ = transform_bounds(
            UTM, src_crs, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
        )
        side *= (bounds.right - bounds.left) / (right - left)
    pixels = round(side / LABEL_PIXEL)
    transform = Affine(
        LABEL_PIXEL, 0, cx - pixels * LABEL_PIXEL / 2, 0, -LABEL_PIXEL, cy + pixels * LABEL_PIXEL / 2
    )
    rotated = np.zeros((values.shape[0], pixels, pixels), np.float32)
    reproject(
        values,
        rotated,
        src_transform=src_transform,
        src_crs=src_crs,
        dst_transform=transform,
        dst_crs=UTM,
        resampling=Resampling.nearest,
    )
    write_raster(zone / "dem.tif", rotated, transform, crs=UTM)
    return transform


def _where(zone: Path, transform: Affine, rows: slice, cols: slice) -> np.ndarray:
    """(H, W) over the map: +1 where a pixel centre lies in ``rows, cols`` of a :data:`UTM` grid
    with ``transform`` by more than 2.5 map pixels, -1 where it lies outside by that much, 0 near
    the edge (where two nearest-neighbour resamplings may go either way)."""
    with rasterio.open(zone / "aerial.tif") as src:
        r, c = np.mgrid[0 : src.height, 0 : src.width]
        xs, ys = src.transform @ (c.ravel() + 0.5, r.ravel() + 0.5)
        shape, zone_crs = (src.height, src.width), src.crs
    x, y = warp_transform(zone_crs, UTM, xs, ys)
    col, row = ~transform @ (np.asarray(x), np.asarray(y))
    depth = np.minimum.reduce([col - cols.start, cols.stop - col, row - rows.start, rows.stop - row])
    margin = 2.5 * LABEL_PIXEL / transform.a
    return np.select([depth > margin, depth < -margin], [1, -1], 0).reshape(shape)


def test_zone_pixels_outside_a_warped_rasters_footprint_are_nodata(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(2, 2))
    transform = _rotated_dem(zone)
    with rasterio.open(zone / "dem.tif") as src:
        assert src.nodata is None and src.mask_flag_enums[0] == [MaskFlags.all_valid]
        footprint = _where(zone, transform, slice(0, src.height), slice(0, src.width))
    assert (footprint == -1).sum() > 0.05 * footprint.size  # the corners it misses are not a sliver
    classes = _map(model, zone, tmp_path / "map.tif")
    assert (classes[footprint == -1] == 255).all()
    assert (classes[footprint == 1] < model.num_classes).all()


@pytest.mark.parametrize("hole", ["nodata", "mask"])
def test_a_warped_rasters_own_nodata_still_counts_inside_its_footprint(model, tmp_path, hole) -> None:
    """Valid = inside the warp's footprint and valid by the raster's own rules (declared nodata in
    every band, or its mask band); one band at the nodata value stays data."""
    zone = write_zone(tmp_path / "zone", tiles=(2, 2))
    transform = _rotated_dem(zone)
    block, dark = (slice(20, 40), slice(20, 40)), (slice(45, 55), slice(10, 50))
    with rasterio.open(zone / "dem.tif") as src:
        values = src.read()
    if hole == "nodata":
        values[(slice(None), *block)] = -9999.0
        values[(1, *dark)] = -9999.0  # the DTM only: data
        write_raster(zone / "dem.tif", values, transform, crs=UTM, nodata=-9999.0)
    else:
        with rasterio.open(zone / "dem.tif", "r+") as dst:
            mask = np.full(values.shape[1:], 255, np.uint8)
            mask[block] = 0
            dst.write_mask(mask)
    footprint = _where(zone, transform, slice(0, values.shape[1]), slice(0, values.shape[2]))
    hole_at = _where(zone, transform, *block)
    classes = _map(model, zone, tmp_path / "map.tif")
    assert (hole_at == 1).sum() > 100
    assert (classes[(footprint == -1) | (hole_at == 1)] == 255).all()
    assert (classes[(footprint == 1) & (hole_at == -1)] < model.num_classes).all()
