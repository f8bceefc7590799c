"""maestro.data.custom.config: the data config YAML, its patch table and the dataset row it makes."""

from pathlib import Path

import pytest

from maestro.data.custom.config import load_custom_data
from maestro.datasets import configured_dataset, get_dataset
from maestro.errors import ConfigError

CONFIG = """\
name: Bocage
patches: patches.csv
nomenclature: nomenclature.yaml
labels: {folder: labels, image_size: 256}
inputs:
  aerial: {folder: aerial, image_size: 256}
  dem: {folder: dem, image_size: 256}
"""
NOMENCLATURE = "classes: [{value: 0, name: other}, {value: 1, name: hedgerow}]\n"
PATCHES = "patch_id,split,date\nA,train,2021-06-15\nB,train,20210616\nC,val,2021-06-17\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "data.yaml").write_text(CONFIG)
    (tmp_path / "nomenclature.yaml").write_text(NOMENCLATURE)
    (tmp_path / "patches.csv").write_text(PATCHES)
    return tmp_path


def test_a_data_config_gives_the_patch_table_and_a_dataset_row_with_its_sizes(folder: Path):
    data = load_custom_data(folder / "data.yaml")
    assert [(p.patch_id, p.split, p.date) for p in data.patches] == [
        ("A", "train", 20210615),
        ("B", "train", 20210616),
        ("C", "val", 20210617),
    ]
    assert data.splits == ("train", "val") and data.raster("aerial", "A") == folder / "aerial" / "A.tif"
    row = configured_dataset("custom", folder / "data.yaml")
    assert row.name == "Bocage" and row.modalities == ("aerial", "dem", "label")
    assert row.default_inputs == ("aerial", "dem") and row.tasks == ("custom",)
    assert [row.image_size(k) for k in row.modalities] == [256, 256, 256]


def test_the_template_row_needs_a_data_config_and_the_others_take_none(folder: Path):
    with pytest.raises(ConfigError, match="described by a data config YAML: pass --data-config"):
        configured_dataset("custom")
    with pytest.raises(ConfigError, match="FLAIR #2 reads none"):
        configured_dataset("flair2", folder / "data.yaml")
    assert configured_dataset("flair-hub") is get_dataset("flair-hub")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("data.yaml", "aerial:", "s2:"), r"time series \['s2'\] are not supported in a custom dataset yet"),
        (("data.yaml", "dem:", "lc:"), r"inputs: \['lc'\] are not input modalities"),
        (("data.yaml", "dem:", "sar:"), r"inputs: \['sar'\] are not input modalities"),
        (("data.yaml", "name: Bocage", "name: Bocage\nname: Haies"), "key 'name' is given twice"),
        (("data.yaml", "labels:", "label:"), r"unknown key\(s\) \['label'\]"),
        (
            ("patches.csv", "C,val", "A,val"),
            r"patches\.csv, line 4: patch A is listed again \(first on line 2\)",
        ),
        (("patches.csv", "2021-06-17", "2021-13-45"), r"line 4: '2021-13-45' is not a date YYYY-MM-DD"),
        (("patches.csv", "C,val", "C,val/x"), r"line 4: split 'val/x' must be a plain name"),
        (("patches.csv", "patch_id,split", "id,split"), r"no \['patch_id'\] column"),
        (("patches.csv", ",date", ""), "has no date column and the data config no `date`"),
    ],
)
def test_a_bad_data_config_or_patch_table_is_a_config_error_naming_the_file(
    folder: Path, edit: tuple[str, str, str], message: str
):
    name, old, new = edit
    path = folder / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as caught:
        load_custom_data(folder / "data.yaml")
    assert name in str(caught.value)


def test_a_default_date_stands_for_patches_without_one(folder: Path):
    (folder / "patches.csv").write_text("patch_id,split\nA,train\nB,test\n")
    (folder / "data.yaml").write_text(CONFIG + "date: 2020-05-01\n")
    assert {p.date for p in load_custom_data(folder / "data.yaml").patches} == {20200501}
