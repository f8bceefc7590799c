"""What ``predict`` counts as nodata in a zone's rasters: declared nodata, a real mask band, never a data band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_fixtures import write_raster, write_tiny_model, write_zone
from rasterio.enums import MaskFlags

from predict.engine import PredictOptions, predict_zone
from predict.model import PredictModel, load_model

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
