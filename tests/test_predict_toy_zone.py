"""``shards toy --zone``: a toy zone in the layout ``predict`` reads, and a map of it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_fixtures import write_tiny_model
from rasterio.enums import MaskFlags

from maestro.datasets import get_dataset
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, with_companions
from predict.model import load_model
from predict.options import PredictOptions
from predict.run import predict_zone
from predict.zone import open_zone
from shards.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    zone = tmp_path_factory.mktemp("toy") / "zone"
    assert main(["toy", "--zone", str(zone), "--size-m", "60", "--seed", "1"]) == 0
    return zone


def test_toy_zone_has_one_raster_per_modality_and_the_dates(toy_zone: Path) -> None:
    for key in get_dataset("flair-hub").modalities:  # a toy zone is FLAIR-HUB's
        entry = MODALITIES[key]
        with rasterio.open(toy_zone / f"{key}.tif") as src:
            assert src.crs.to_epsg() == 2154 and src.res == pytest.approx((entry.pixel_size_m,) * 2)
            assert src.width == int(np.ceil(60 / entry.pixel_size_m - 1e-6)) and src.dtypes[0] == entry.dtype
            dates_file = toy_zone / f"{entry.companion_of or key}_dates.json"
            dates = len(json.loads(dates_file.read_text())) if entry.temporal else 1
            assert src.count == entry.num_bands * dates
            assert all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)  # no alpha band
    assert not (toy_zone / "dem_dates.json").exists() and not (toy_zone / "s2_mask_dates.json").exists()


def test_toy_zone_opens_for_a_full_size_model_without_resampling(toy_zone: Path, caplog) -> None:
    keys = with_companions(DEFAULT_INPUTS)
    with caplog.at_level(logging.WARNING):
        zone = open_zone(toy_zone, keys, {k: MODALITIES[k].pixel_size_m for k in DEFAULT_INPUTS}, 0.2)
    assert "resampled" not in caplog.text
    with rasterio.open(toy_zone / "aerial.tif") as aerial:
        assert zone.grid.transform == aerial.transform and (zone.grid.width, zone.grid.height) == (300, 300)


def test_tiny_model_maps_the_toy_zone(toy_zone: Path, tmp_path: Path) -> None:
    model = load_model(str(write_tiny_model(tmp_path / "model")[0]))
    summary = predict_zone(
        model,
        toy_zone,
        tmp_path / "map.tif",
        PredictOptions(overlap=0.0, batch_size=25, progress=False),
        "cpu",
    )
    assert summary.tiles == 100 and summary.nodata_fraction == 0.0
    with rasterio.open(tmp_path / "map.tif") as src:
        assert (src.width, src.height) == (300, 300) and (src.read(1) < model.num_classes).all()


def test_toy_zone_refuses_a_non_empty_folder(toy_zone: Path) -> None:
    assert main(["toy", "--zone", str(toy_zone)]) == 2
