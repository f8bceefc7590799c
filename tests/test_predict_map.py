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
from predict.engine import TileError, UnitJob, UnitMapper, UnitStats
from predict.model import PredictModel, load_model
from predict.options import PredictOptions
from predict.run import predict_zone
from predict.tiling import stride_for
from predict.units import plan_units, unit_tiles
from predict.zone import open_zone

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
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "map.json",
        "map.tif",
        "map_probabilities.tif",
    ]  # + STAC Item
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

    def forward(self, inputs, times, valid=None, allow_missing=False, padded=None):
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

    def forward(self, inputs, times, valid=None, allow_missing=False, padded=None):
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


class _PixelsAndTiles(nn.Module):
    """Logits from each pixel's DSM and red value plus a per-tile constant: tiles disagree where they
    overlap (so blending matters) and, elementwise, a tile's logits do not depend on its batch."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, inputs, times, valid=None, allow_missing=False, padded=None):
        aerial = inputs["aerial"][:, 0].float()
        per_tile = aerial.mean(dim=(1, 2, 3))[:, None, None, None] * 10.0
        first = (inputs["dem"][:, 0, :1].float() - 0.2) * 400.0 + per_tile
        second = aerial[:, :1] * 20.0 - per_tile
        rest = torch.zeros_like(first).expand(-1, self.num_classes - 2, -1, -1)
        return {"logits": torch.cat([first, second, rest], 1)}


def test_units_smaller_than_the_zone_give_the_same_map_bit_for_bit(model, tmp_path) -> None:
    """Unit edges at output rows and columns 256 cut through tiles (overlap 0.25): blended from the
    same tiles in the same order by whichever unit holds the pixel, the map has no seam. (A real
    network's logits for a tile may differ on CPU in the last bit with the other tiles of its
    batch, and the batches next to a unit edge are not the whole zone's: hence a network that
    computes each tile alone, as one with batches of 1 would.)"""
    zone = write_zone(tmp_path / "zone", tiles=(10, 9))  # 320 x 288 px: 2 x 2 units of 256
    network = dataclasses.replace(model, network=_PixelsAndTiles(model.num_classes))
    whole = _run(network, zone, tmp_path / "whole.tif", probabilities="float16")
    units = _run(network, zone, tmp_path / "units.tif", probabilities="float16", unit_px=256)
    np.testing.assert_array_equal(_read(whole), _read(units))
    probabilities = _read(tmp_path / "whole_probabilities.tif")
    np.testing.assert_array_equal(probabilities, _read(tmp_path / "units_probabilities.tif"))
    assert len(np.unique(_read(whole))) > 1 and np.isfinite(probabilities).all()


def _jobs(
    model: PredictModel, zone_dir: Path, out: Path, unit_px: int, overlap: float = 0.25
) -> list[UnitJob]:
    zone = open_zone(
        zone_dir, model.rasters(), {key: model.input_pixel_m(key) for key in model.specs}, model.label_pixel_m
    )
    stride = stride_for(model.tile_size, overlap)
    return [
        UnitJob(
            zone, unit, tuple(unit_tiles(zone.grid, model.tile_size, stride, unit)), out / f"{unit.name}.tif"
        )
        for unit in plan_units("zone", zone.grid, unit_px)
    ]


def test_unit_files_are_in_place_before_on_done(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(10, 2))  # 320 x 64 px: units of 256 and 64 columns
    jobs = _jobs(model, zone, tmp_path / "units", 256)
    assert len(jobs) == 2
    mapper = UnitMapper(model, PredictOptions(probabilities="uint8", workers=0, progress=False), "cpu")
    seen: list[list[str]] = []

    def on_done(stats: UnitStats) -> None:  # hidden: the temporary files of the unit in flight
        seen.append(sorted(p.name for p in (tmp_path / "units").iterdir() if not p.name.startswith(".")))
        assert stats.tiles == len(stats.job.tiles) and stats.busy_seconds > 0 and stats.seconds > 0
        assert stats.km2 == pytest.approx(stats.job.unit.pixels * 0.2**2 / 1e6)

    assert mapper.run(jobs, on_done=on_done)
    names = [[job.out.name, job.out.name.replace(".tif", "_probabilities.tif")] for job in jobs]
    assert seen == [names[0], sorted(names[0] + names[1])]  # complete, and nothing temporary left
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == sorted(names[0] + names[1])
    with rasterio.open(jobs[0].out) as src:
        assert (src.width, src.height) == (256, 64) and src.nodata == 255
        assert src.transform == jobs[0].unit.grid(jobs[0].zone.grid).transform
        assert src.tags()["class_0"] == "building"


def test_units_of_a_country_map_are_cogs_with_overviews(model, tmp_path) -> None:
    """With ``cog_units`` (``predict --zones``: the unit files are the map's tiles) each unit is a
    COG whose overviews the zone's VRT shows when zoomed out; published off the main loop, still
    before ``on_done``."""
    zone = write_zone(tmp_path / "zone", tiles=(25, 24))  # 800 x 768 px: units of 768 and 32 columns
    jobs = _jobs(model, zone, tmp_path / "units", 768, overlap=0.0)
    mapper = UnitMapper(model, PredictOptions(workers=0, progress=False), "cpu", cog_units=True)
    layouts: list[str] = []

    def on_done(stats: UnitStats) -> None:
        with rasterio.open(stats.job.out) as src:
            layouts.append(src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", ""))

    assert mapper.run(jobs, on_done=on_done)
    assert layouts == ["COG", "COG"]
    with rasterio.open(jobs[0].out) as src:
        assert (src.width, src.height) == (768, 768) and src.overviews(1) == [2]  # 384 px: one block


def test_a_stop_between_batches_leaves_no_file_of_the_unit_in_flight(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(10, 2))
    jobs = _jobs(model, zone, tmp_path / "units", 256)
    mapper = UnitMapper(model, PredictOptions(batch_size=2, workers=0, progress=False), "cpu")
    done: list[UnitStats] = []
    asked_since_done: list[int] = []

    def should_stop() -> bool:  # two batches into the second unit
        if done:
            asked_since_done.append(1)
        return len(asked_since_done) == 3

    assert not mapper.run(jobs, on_done=done.append, should_stop=should_stop)
    assert [s.job for s in done] == jobs[:1]
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == [jobs[0].out.name]


class _Failing(nn.Module):
    def forward(self, inputs, times, valid=None, allow_missing=False, padded=None):
        raise FloatingPointError("the network failed")


def test_a_failing_forward_names_its_tiles_and_leaves_no_unit_file(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(10, 2))
    broken = dataclasses.replace(model, network=_Failing())
    jobs = _jobs(broken, zone, tmp_path / "units", 256)
    mapper = UnitMapper(broken, PredictOptions(batch_size=4, workers=0, progress=False), "cpu")
    with pytest.raises(
        TileError, match=r"^tile r0 c0 \(rows 0-31, cols 0-31\) and the 3 next: FloatingPointError"
    ):
        mapper.run(jobs, on_done=lambda stats: None)
    assert not list((tmp_path / "units").iterdir())


def test_rasters_not_covering_the_same_area_are_refused(model, tmp_path) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(4, 3), shrink={"s1_asc": 3})
    with pytest.raises(ConfigError, match=r"do not cover the same area: s1_asc\.tif"):
        _run(model, zone, tmp_path / "out" / "map.tif")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
