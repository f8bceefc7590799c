"""maestro.data.custom.reader (and the toy it is tested on): GeoTIFF patches -> samples, bad input named."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import Affine

from maestro.data.custom.config import load_custom_data
from maestro.data.custom.reader import CustomReader
from maestro.data.custom.toy import write_custom_toy
from maestro.errors import DataError
from shards.cli import main as shards_main


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("custom") / "bocage"
    write_custom_toy(root, num_patches=4, seed=0)
    return root


@pytest.fixture
def copy(toy: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy, tmp_path / "bocage"))


def _reader(root: Path, split: str = "train", **options) -> CustomReader:
    return CustomReader(load_custom_data(root / "data.yaml"), split, **options)


def _rewrite(path: Path, array: np.ndarray | None = None, shift_m: float = 0.0) -> None:
    """Rewrite a GeoTIFF with another array and/or a footprint moved east by ``shift_m``."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    data = data if array is None else array
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype.name)
    profile["transform"] = profile["transform"] @ Affine.translation(shift_m / profile["transform"].a, 0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_the_toy_is_the_documented_layout_and_reads_as_samples(toy: Path):
    data = load_custom_data(toy / "data.yaml")
    assert data.config.name == "Toy bocage" and data.inputs == ("aerial", "dem")
    assert {p.split for p in data.patches} == {"train", "val", "test"}
    assert json.loads((toy / "TOY_DATASET.json").read_text())["generator"] == "shards toy --dataset custom"
    assert {p.name for p in (toy / "zone").iterdir()} == {
        "aerial.tif",
        "aerial_dates.json",
        "dem.tif",
        "label.tif",
    }
    reader = _reader(toy)
    sample = reader.read(reader.patch_ids[0])
    assert sample["aerial"].shape == (4, 512, 512) and sample["aerial"].dtype == np.uint8
    assert sample["dem"].shape == (2, 512, 512) and sample["dem"].dtype == np.float32
    assert sample["label"].shape == (1, 512, 512) and set(np.unique(sample["label"])) <= {0, 1, 2, 3}
    assert (sample["dem"][0] >= sample["dem"][1]).all()  # DSM over DTM
    assert sample["dates"]["aerial"].dtype == np.int32 and sample["dates"].keys() == {"aerial", "dem"}
    assert sample["meta"]["rasters"]["label"]["path"] == f"labels/{reader.patch_ids[0]}.tif"
    with (
        rasterio.open(toy / "zone" / "aerial.tif") as zone,
        rasterio.open(toy / "aerial" / f"{reader.patch_ids[0]}.tif") as patch,
    ):  # patches are windows of the zone
        window = zone.window(*patch.bounds)
        assert np.array_equal(zone.read(window=window.round_offsets().round_lengths()), patch.read())


def test_every_class_of_the_taxonomy_is_drawn(toy: Path):
    with rasterio.open(toy / "zone" / "label.tif") as src:
        raw = src.read(1)
    assert set(np.unique(raw)) == {0, 11, 12, 20, 30}  # two hedgerow survey codes, grouped by the YAML


def test_a_label_value_absent_from_the_nomenclature_names_the_patch_and_file(copy: Path):
    reader = _reader(copy)
    patch_id = reader.patch_ids[0]
    label = copy / "labels" / f"{patch_id}.tif"
    raw = np.zeros((1, 512, 512), dtype=np.uint8)
    raw[0, :2, :2] = 13
    _rewrite(label, raw)
    with pytest.raises(
        DataError, match=r"label values \[13\] are not in the nomenclature's grouping"
    ) as caught:
        reader.read(patch_id)
    assert caught.value.patch_id == patch_id and caught.value.path == str(label)


def test_rasters_that_do_not_share_a_footprint_are_refused(copy: Path):
    reader = _reader(copy)
    patch_id = reader.patch_ids[0]
    _rewrite(copy / "dem" / f"{patch_id}.tif", shift_m=10.0)
    with pytest.raises(DataError, match="dem: does not share the footprint of aerial/") as caught:
        reader.read(patch_id)
    assert caught.value.patch_id == patch_id and caught.value.path.endswith(f"dem/{patch_id}.tif")
    _rewrite(copy / "dem" / f"{patch_id}.tif", shift_m=-9.95)  # back within a quarter pixel: accepted
    reader.read(patch_id)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 512, 512), np.uint8), r"aerial: expected 4 bands \['R', 'G', 'B', 'NIR'\], got 3"),
        (np.zeros((4, 256, 256), np.uint8), "aerial: expected 512 x 512 px"),
        (np.zeros((4, 512, 512), np.float32), "data type float32 does not convert safely to uint8"),
    ],
)
def test_wrong_bands_sizes_or_data_types_are_refused(copy: Path, array: np.ndarray, message: str):
    reader = _reader(copy)
    patch_id = reader.patch_ids[0]
    _rewrite(copy / "aerial" / f"{patch_id}.tif", array)
    with pytest.raises(DataError, match=message):
        reader.read(patch_id)


def test_missing_files_and_nan_elevation_are_refused(copy: Path):
    reader = _reader(copy)
    first, second = reader.patch_ids[:2]
    (copy / "aerial" / f"{first}.tif").unlink()
    with pytest.raises(DataError, match="aerial: file not found"):
        reader.read(first)
    dem = np.ones((2, 512, 512), dtype=np.float32)
    dem[0, 0, 0] = np.nan
    _rewrite(copy / "dem" / f"{second}.tif", dem)
    with pytest.raises(DataError, match="dem: holds NaN"):
        reader.read(second)
    assert np.isnan(_reader(copy, allow_nan=True).read(second)["dem"]).any()


def test_a_changed_nomenclature_changes_every_patch_source_state(copy: Path):
    before = _reader(copy).source_state(_reader(copy).patch_ids[0])
    path = copy / "nomenclature.yaml"
    path.write_text(path.read_text().replace("12: 1", "12: 2"))
    after = _reader(copy).source_state(_reader(copy).patch_ids[0])
    assert before["classes"] != after["classes"] and before["aerial"] == after["aerial"]


def test_shards_build_stops_on_a_bad_patch_or_skips_and_counts_it(copy: Path, tmp_path: Path):
    reader = _reader(copy)
    bad = reader.patch_ids[0]
    _rewrite(copy / "dem" / f"{bad}.tif", shift_m=50.0)
    args = ["build", "--data-config", str(copy / "data.yaml"), "--split", "train", "--no-progress"]
    assert shards_main([*args, "--out", str(tmp_path / "stopped")]) == 2
    assert not (tmp_path / "stopped").exists()
    assert shards_main([*args, "--out", str(tmp_path / "shards"), "--skip-bad"]) == 0
    entry = json.loads((tmp_path / "shards" / "manifest.json").read_text())["splits"]["train"]
    assert entry["dataset_key"] == "custom" and entry["dataset"] == "toy"
    assert entry["modalities"] == ["aerial", "dem", "label"]
    assert [s["patch_id"] for s in entry["skipped"]] == [bad] and "footprint" in entry["skipped"][0]["error"]
    assert entry["totals"]["samples"] == len(reader) - 1


def test_the_readme_shows_the_toy_s_data_config_and_nomenclature(toy: Path):
    """README, "Your own dataset": its two YAML blocks are the files the toy writes (comments aside)."""
    from test_readme_commands import readme_sections

    blocks = re.findall(r"```yaml\n(.*?)```", readme_sections()["Your own dataset"], re.S)
    shown = [yaml.safe_load(block) for block in blocks]
    assert shown == [yaml.safe_load((toy / name).read_text()) for name in ("data.yaml", "nomenclature.yaml")]
