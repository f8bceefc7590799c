"""Zone layout checks of ``predict``: what is refused before any tile runs, and warped rasters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_fixtures import FOOTPRINT, LABEL_PIXEL, write_raster, write_tiny_model, write_zone
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.warp import Resampling, calculate_default_transform, reproject

from maestro.errors import ConfigError
from maestro.models.synthetic import tiny_config
from predict.model import load_model
from predict.options import PredictOptions
from predict.run import predict_zone
from predict.zone import open_in, open_zone

KEYS = (*tiny_config().encoder.modalities, "s2_mask")
PIXELS = {key: FOOTPRINT / spec.image_size for key, spec in tiny_config().encoder.specs.items()}


def _open(zone: Path):
    return open_zone(zone, KEYS, PIXELS, LABEL_PIXEL)


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    return write_zone(tmp_path / "zone", tiles=(2, 2))


def test_a_complete_zone_opens_on_the_aerial_grid(zone: Path) -> None:
    opened = _open(zone)
    assert opened.reference == "aerial" and list(opened.rasters)[0] == "aerial"
    with rasterio.open(zone / "aerial.tif") as src:
        assert opened.grid.transform == src.transform and opened.grid.crs == src.crs
    assert len(opened.rasters["s2_mask"].dates) == len(opened.rasters["s2"].dates) == 6


def test_missing_or_ambiguous_files_are_named(zone: Path) -> None:
    (zone / "s1_des.tif").rename(zone / "s1_des.vrt.bak")
    with pytest.raises(ConfigError, match=r"no s1_des raster: expected .*s1_des\.tif"):
        _open(zone)
    (zone / "s1_des.vrt.bak").rename(zone / "s1_des.tif")
    (zone / "s2_dates.txt").write_text("20210101\n")
    with pytest.raises(ConfigError, match="both s2_dates.json and s2_dates.txt"):
        _open(zone)


def test_dates_must_match_the_bands_and_be_dates(zone: Path) -> None:
    (zone / "s2_dates.json").write_text(json.dumps([20210101, 20210201]))
    with pytest.raises(ConfigError, match=r"s2\.tif: 60 bands, expected 20"):
        _open(zone)
    (zone / "s2_dates.json").write_text(json.dumps(["2021-01-01"] * 6))
    with pytest.raises(ConfigError, match="s2_dates.json: date '2021-01-01' is not YYYYMMDD"):
        _open(zone)
    (zone / "aerial_dates.json").write_text(json.dumps([20210601, 20210602]))
    with pytest.raises(ConfigError, match="aerial is mono-temporal"):
        _open(zone)


def test_no_crs_and_geographic_crs_are_refused(zone: Path) -> None:
    with rasterio.open(zone / "dem.tif") as src:
        values, transform = src.read(), src.transform
    write_raster(zone / "dem.tif", values, transform, crs=None)
    with pytest.raises(ConfigError, match=r"dem\.tif has no CRS"):
        _open(zone)
    with rasterio.open(zone / "aerial.tif") as src:
        values = src.read()
    write_raster(zone / "aerial.tif", values, rasterio.Affine(1e-5, 0, 2.0, 0, -1e-5, 47.0), crs="EPSG:4326")
    with pytest.raises(ConfigError, match="not in metres"):
        _open(zone)


def test_a_raster_in_another_crs_is_warped_to_the_zone(zone: Path, tmp_path: Path) -> None:
    with rasterio.open(zone / "dem.tif") as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:32631", src.width, src.height, *src.bounds, resolution=LABEL_PIXEL
        )
        warped = np.zeros((src.count, height, width), np.float32)
        reproject(
            src.read(),
            warped,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:32631",
            resampling=Resampling.nearest,
        )
    write_raster(zone / "dem.tif", warped, transform, crs="EPSG:32631")
    opened = _open(zone)
    assert opened.rasters["dem"].warped and not opened.rasters["aerial"].warped
    assert opened.grid.crs.to_epsg() == 2154
    model = load_model(str(write_tiny_model(tmp_path / "model")[0]))
    summary = predict_zone(model, zone, tmp_path / "map.tif", PredictOptions(progress=False), "cpu")
    assert (summary.width, summary.height) == (64, 64)
    assert summary.nodata_fraction == 0.0  # the warped dem covers the whole zone: its alpha is 255 there


def test_a_warped_rgba_tiff_keeps_band_4_as_data_and_gets_the_warps_alpha(tmp_path: Path) -> None:
    """Band 4 of a 4-band uint8 TIFF (GDAL's alpha, NIR here) must not drive the warp's mask."""
    values = np.full((4, 40, 40), 90, np.uint8)
    values[3, 10:30, 10:30] = 0  # NIR 0: data, not a hole
    path = tmp_path / "rgbn.tif"
    write_raster(path, values, rasterio.Affine(0.2, 0, 500_000.0, 0, -0.2, 5_200_000.0), crs="EPSG:32631")
    with rasterio.open(path) as src:
        assert MaskFlags.alpha in src.mask_flag_enums[0]
    with open_in(path, CRS.from_epsg(2154)) as warped:
        assert warped.count == 5 and warped.colorinterp[4] == ColorInterp.alpha
        read = warped.read()
    inside = read[4] > 0
    assert inside.mean() > 0.5 and (read[:3][:, inside] == 90).all()  # RGB kept under NIR 0
    assert (read[3][inside] == 0).any() and (read[3][inside] == 90).any()
