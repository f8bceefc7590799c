"""``predict`` end to end on synthetic zones with a tiny segmenter (CPU, a few 32 px tiles)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from einops import rearrange
from predict_fixtures import TILE, write_raster, write_tiny_model, write_zone
from rasterio.windows import Window
from torch import nn

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import preprocess_sample
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from predict.engine import PredictOptions, predict_zone
from predict.model import PredictModel, load_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> PredictModel:
    folder, _ = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    return load_model(str(folder))


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zone(tmp_path_factory.mktemp("zone") / "zone", tiles=(4, 3))


def _run(model: PredictModel, zone: Path, out: Path, **options) -> Path:
    options.setdefault("progress", False)
    predict_zone(model, zone, out, PredictOptions(**options), "cpu")
    return out


def _direct(model: PredictModel, zone: Path, row: int, col: int) -> np.ndarray:
    """(K, L, L) logits of the tile at output pixel (row, col), read with plain rasterio windows."""
    raw = {"dates": {}, "meta": {"patch_id": f"direct {row} {col}"}}
    for key in model.rasters():
        entry = MODALITIES[key]
        size = model.specs[entry.companion_of or key].image_size
        scale = size / TILE
        with rasterio.open(zone / f"{key}.tif") as src:
            values = src.read(window=Window(col * scale, row * scale, size, size))
        raw[key] = rearrange(values, "(t c) h w -> t c h w", c=entry.num_bands) if entry.temporal else values
        dates = zone / f"{key}_dates.json"
        if dates.exists():
            raw["dates"][key] = np.array([int(d) for d in json.loads(dates.read_text())], dtype=np.int32)
    batch = collate_model_samples([preprocess_sample(raw, model.preprocess(), train=False)])
    with torch.no_grad():
        return model.network(batch["inputs"], batch["times"], batch["valid"])["logits"][0].numpy()


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_map_equals_per_tile_predictions_where_tiles_do_not_overlap(model, zone, tmp_path) -> None:
    out = _run(model, zone, tmp_path / "map.tif", overlap=0.0, probabilities="float16")
    classes, probabilities = _read(out)[0], _read(tmp_path / "map_probabilities.tif")
    for row in range(0, 96, TILE):
        for col in range(0, 128, TILE):
            logits = _direct(model, zone, row, col)
            tile = np.s_[row : row + TILE, col : col + TILE]
            np.testing.assert_array_equal(classes[tile], logits.argmax(axis=0))
            expected = torch.softmax(torch.from_numpy(logits), dim=0).numpy()
            np.testing.assert_allclose(probabilities[(slice(None), *tile)], expected, atol=2e-3)


def test_with_overlap_pixels_seen_by_one_tile_keep_its_prediction(model, zone, tmp_path) -> None:
    classes = _read(_run(model, zone, tmp_path / "map.tif", overlap=0.25))[0]
    # tile columns start at 0, 24, 48, 72, 96 and rows at 0, 24, 48, 64: columns 0-23 x rows 0-23 see one tile
    np.testing.assert_array_equal(classes[:24, :24], _direct(model, zone, 0, 0).argmax(axis=0)[:24, :24])


def test_output_is_a_cog_on_the_finest_input_grid_with_classes_and_colours(model, zone, tmp_path) -> None:
    out = _run(model, zone, tmp_path / "maps" / "map.tif", probabilities="uint8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.tif", "map_probabilities.tif"]
    with rasterio.open(zone / "aerial.tif") as aerial, rasterio.open(out) as result:
        assert result.transform == aerial.transform and result.crs == aerial.crs
        assert (result.width, result.height) == (aerial.width, aerial.height)
        assert result.dtypes == ("uint8",) and result.nodata == 255
        assert result.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        names = json.loads(result.tags()["class_names"])
        assert names == list(model.task.class_names) and result.tags()["class_0"] == "building"
        assert result.colormap(1)[0][:3] == model.task.palette[0]
        assert set(np.unique(result.read(1))) <= set(range(model.num_classes))
    with rasterio.open(tmp_path / "maps" / "map_probabilities.tif") as probabilities:
        assert probabilities.count == model.num_classes and probabilities.dtypes[0] == "uint8"
        assert probabilities.descriptions[0] == "building"
        total = probabilities.read().astype(np.int32).sum(axis=0)
        assert np.abs(total - 255).max() <= model.num_classes  # rounding of each band


def test_nodata_and_areas_outside_an_input_are_255(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(4, 3), shrink={"s2": 1})  # s2 ends 1.6 m short on the right
    with rasterio.open(zone / "aerial.tif") as src:
        aerial, transform = src.read(), src.transform
    aerial[:, 40:50, 60:70] = 0
    write_raster(zone / "aerial.tif", aerial, transform, nodata=0)
    classes = _read(_run(model, zone, tmp_path / "map.tif"))[0]
    expected = np.zeros(classes.shape, bool)
    expected[40:50, 60:70] = True
    expected[:, 120:] = True  # beyond the last s2 pixel
    np.testing.assert_array_equal(classes == 255, expected)


class _FromElevation(nn.Module):
    """Class-0 logit from the DSM under each pixel: one smooth field in ground coordinates, so
    every tile predicts the same value at the same place."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, inputs, times, valid=None, allow_missing=False):
        dsm = inputs["dem"][:, 0, :1].float()
        first = (dsm - 0.2) * 400.0
        return {
            "logits": torch.cat([first, torch.zeros_like(first).expand(-1, self.num_classes - 1, -1, -1)], 1)
        }


class _TileConstant(nn.Module):
    """A different constant logit per tile (its mean aerial value): the worst case for seams."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, inputs, times, valid=None, allow_missing=False):
        mean = (inputs["aerial"].float().mean(dim=(1, 2, 3, 4))[:, None, None, None] - 0.5) * 40.0
        first = mean.expand(-1, 1, TILE, TILE)
        return {
            "logits": torch.cat([first, torch.zeros(first.shape[0], self.num_classes - 1, TILE, TILE)], 1)
        }


def test_blending_leaves_no_seams(model, zone, tmp_path) -> None:
    smooth = dataclasses.replace(model, network=_FromElevation(model.num_classes))
    _run(smooth, zone, tmp_path / "smooth.tif", probabilities="float16")
    with rasterio.open(zone / "dem.tif") as src:
        field = (src.read(1) / 1000.0 - 0.2) * 400.0
    expected = 1.0 / (1.0 + (model.num_classes - 1) * np.exp(-field))
    np.testing.assert_allclose(_read(tmp_path / "smooth_probabilities.tif")[0], expected, atol=2e-3)

    jumps = {}
    for overlap in (0.0, 0.5):
        constant = dataclasses.replace(model, network=_TileConstant(model.num_classes))
        out = tmp_path / f"constant{overlap}.tif"
        _run(constant, zone, out, overlap=overlap, probabilities="float16")
        p = _read(tmp_path / f"constant{overlap}_probabilities.tif")[0].astype(np.float64)
        logit = np.log(p / (1 - p)) + np.log(model.num_classes - 1)
        jumps[overlap] = max(np.abs(np.diff(logit, axis=0)).max(), np.abs(np.diff(logit, axis=1)).max())
    assert jumps[0.5] < 0.15 * jumps[0.0]


def test_column_chunks_give_the_same_map(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(20, 2))
    whole = _read(_run(model, zone, tmp_path / "whole.tif", probabilities="uint8"))
    chunked = _read(_run(model, zone, tmp_path / "chunked.tif", probabilities="uint8", buffer_mib=1))
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(
        _read(tmp_path / "whole_probabilities.tif"), _read(tmp_path / "chunked_probabilities.tif")
    )


def test_rasters_not_covering_the_same_area_are_refused(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(4, 3), shrink={"s1_asc": 3})
    with pytest.raises(ConfigError, match=r"do not cover the same area: s1_asc\.tif"):
        _run(model, zone, tmp_path / "out" / "map.tif")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
