"""FLAIR-HUB reader on a real (tiny) tree: exact round trip, CSV / scan listing, every bad input."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fixtures_flairhub import FlairHubTree, patch_transform, random_raster, write_flairhub_tree
from rasterio.transform import Affine

from maestro.data.flairhub import (
    FlairHubReader,
    read_raster,
    read_split_csv,
    scan_patches,
    split_by_domain,
    to_sample_layout,
)
from maestro.datasets import get_dataset
from maestro.errors import DataError
from maestro.modalities import get_modality

ALL = get_dataset("flair-hub").modalities
TRAIN = ["D006-2020_FF-S1-14_3-7", "D006-2020_FF-S1-14_3-8", "D006-2020_FF-S1-15_0-0"]
VAL = ["D034-2021_UU-S2-3_12-4"]
LACKING = {TRAIN[1]: {"spot", "s1_des", "hist"}}

PATCH = "D006-2020_FF-S1-14_3-7"
SMALL = ("aerial", "dem", "s2", "s2_mask", "s1_asc", "lc", "lpis")
"""Modalities of the per-test tree used to build bad inputs (no duplicates of the same checks)."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FlairHubTree:
    root = tmp_path_factory.mktemp("flairhub")
    return write_flairhub_tree(root, ALL, {"train": TRAIN, "val": VAL}, missing=LACKING)


@pytest.fixture()
def small(tmp_path: Path) -> FlairHubTree:
    return write_flairhub_tree(tmp_path, SMALL, {"train": [PATCH]})


def _reader(tree: FlairHubTree, **kwargs: object) -> FlairHubReader:
    return FlairHubReader(tree.root, tree.modalities, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_is_exact(tree: FlairHubTree) -> None:
    reader = _reader(tree)
    assert reader.patch_ids == TRAIN and len(reader) == len(TRAIN)
    for patch_id in TRAIN:
        sample = reader.read(patch_id)
        present = [k for k in ALL if k not in LACKING.get(patch_id, set())]
        assert sorted(k for k in sample if k not in ("dates", "meta")) == sorted(present)
        for key in present:
            modality = get_modality(key)
            expected = to_sample_layout(tree.arrays[patch_id][key], modality)
            assert sample[key].dtype == np.dtype(modality.dtype)
            size = (modality.size_px, modality.size_px)
            assert sample[key].shape[-3:] == (modality.num_bands, *size)
            assert sample[key].ndim == (4 if modality.temporal else 3)
            np.testing.assert_array_equal(sample[key], expected)
            raster = sample["meta"]["rasters"][key]
            assert raster["crs"] == "EPSG:2154"
            assert raster["transform"] == tuple(patch_transform(patch_id, modality))[:6]
            assert (tree.root / raster["path"]).resolve() == tree.path(patch_id, key).resolve()
            assert not Path(raster["path"]).is_absolute()
        dated = [k for k in present if get_modality(k).dates_table]
        assert sorted(sample["dates"]) == sorted(dated)
        for key in dated:
            dates = sample["dates"][key]
            assert dates.dtype == np.int32 and dates.flags.writeable
            np.testing.assert_array_equal(dates, tree.dates[get_modality(key).dates_table][patch_id])
            assert len(dates) == (sample[key].shape[0] if get_modality(key).temporal else 1)
        meta = sample["meta"]
        assert (meta["patch_id"], meta["domain"], meta["split"]) == (patch_id, "D006-2020", "train")
        assert meta["roi"] == patch_id.split("_")[1]


def test_time_series_layout_is_date_major(tree: FlairHubTree) -> None:
    sample = _reader(tree).read(TRAIN[0])
    raw = tree.arrays[TRAIN[0]]["s2"]
    assert sample["s2"].shape[0] * 10 == raw.shape[0]
    np.testing.assert_array_equal(sample["s2"][1, 2], raw[1 * 10 + 2])
    assert sample["s2_mask"].shape[:2] == (sample["s2"].shape[0], 2)
    np.testing.assert_array_equal(sample["dates"]["s2_mask"], sample["dates"]["s2"])


def test_sequence_access_and_other_split(tree: FlairHubTree) -> None:
    reader = _reader(tree)
    assert reader[-1]["meta"]["patch_id"] == TRAIN[-1]
    assert [s["meta"]["patch_id"] for s in reader] == TRAIN
    val = _reader(tree, split="val")
    assert val.patch_ids == VAL and val[0]["meta"]["split"] == "val"
    assert val[0]["meta"]["domain"] == "D034-2021"
    with pytest.raises(IndexError):
        reader[len(reader)]


def test_subset_of_modalities(tree: FlairHubTree) -> None:
    sample = FlairHubReader(tree.root, ["s1_asc", "lpis"])[0]
    assert set(sample) == {"s1_asc", "lpis", "dates", "meta"}
    assert set(sample["dates"]) == {"s1_asc"}


def test_folder_suffix_column_aliases(tree: FlairHubTree, tmp_path: Path) -> None:
    csv_path = tmp_path / "aliased.csv"
    with tree.csv("train").open() as src, csv_path.open("w", newline="") as dst:
        rows = list(csv.reader(src))
        rows[0] = [c if c == "patch_id" else get_modality(c).folder_suffix for c in rows[0]]
        csv.writer(dst).writerows(rows)
    reader = _reader(tree, split_csv=csv_path)
    np.testing.assert_array_equal(reader[0]["s2_mask"], _reader(tree)[0]["s2_mask"])


def test_read_raster_returns_array_and_georef(tree: FlairHubTree) -> None:
    array, georef = read_raster(tree.path(TRAIN[0], "spot"), "spot", TRAIN[0])
    np.testing.assert_array_equal(array, tree.arrays[TRAIN[0]]["spot"])
    assert georef == {
        "crs": "EPSG:2154",
        "transform": tuple(patch_transform(TRAIN[0], get_modality("spot")))[:6],
    }


# ------------------------------------------------------------------------------------- folder scan


def test_scan_finds_the_csv_patches(tree: FlairHubTree) -> None:
    scanned = scan_patches(tree.root, ALL)
    assert [p.patch_id for p in scanned] == sorted(TRAIN + VAL)
    from_csv = {p.patch_id: dict(p.paths) for p in read_split_csv(tree.csv("train"), ALL)}
    for patch in scanned:
        if patch.patch_id in from_csv:
            assert dict(patch.paths) == from_csv[patch.patch_id]
    assert "hist" in dict(scanned[0].paths)  # D006-195X folder attached to the D006-2020 patch
    folds = split_by_domain(scanned, {"D006-2020": "train", "D034-2021": "test"})
    assert [p.patch_id for p in folds["test"]] == VAL


def test_reader_from_domain_splits(tree: FlairHubTree) -> None:
    reader = _reader(tree, split="val", domain_splits={"D006-2020": "train", "D034-2021": "val"})
    assert reader.patch_ids == VAL
    np.testing.assert_array_equal(reader[0]["aerial"], tree.arrays[VAL[0]]["aerial"])
    with pytest.raises(ValueError, match="no domain is assigned to split 'test'"):
        _reader(tree, split="test", domain_splits={"D006-2020": "train"})


def test_scan_needs_a_modality_named_after_the_domain(tree: FlairHubTree) -> None:
    with pytest.raises(ValueError, match="hist"):
        scan_patches(tree.root, ["hist"])


# ----------------------------------------------------------------------------------- bad rasters

Breaker = Callable[[FlairHubTree], str]
"""Breaks the small tree and returns the name of the file the error must mention."""


def _rewrite(key: str, make: Callable[[np.ndarray], np.ndarray]) -> Breaker:
    def breaker(tree: FlairHubTree) -> str:
        tree.write_raster(PATCH, key, make(tree.arrays[PATCH][key]))
        return tree.path(PATCH, key).name

    return breaker


def _delete(tree: FlairHubTree) -> str:
    tree.path(PATCH, "aerial").unlink()
    return tree.path(PATCH, "aerial").name


def _garbage(tree: FlairHubTree) -> str:
    tree.path(PATCH, "dem").write_bytes(b"II*\x00 definitely not a tiff" * 64)
    return tree.path(PATCH, "dem").name


def _truncate(tree: FlairHubTree) -> str:
    path = tree.path(PATCH, "aerial")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.name


def _with_value(key: str, band: int, value: float) -> Breaker:
    def make(array: np.ndarray) -> np.ndarray:
        array = array.copy()
        array[band, 3, 4] = value
        return array

    return _rewrite(key, make)


def _wrong_crs(tree: FlairHubTree) -> str:
    tree.write_raster(PATCH, "aerial", tree.arrays[PATCH]["aerial"], crs="EPSG:32631")
    return tree.path(PATCH, "aerial").name


def _no_crs(tree: FlairHubTree) -> str:
    tree.write_raster(PATCH, "aerial", tree.arrays[PATCH]["aerial"], crs=None)
    return tree.path(PATCH, "aerial").name


def _wrong_pixel_size(tree: FlairHubTree) -> str:
    transform = patch_transform(PATCH, get_modality("dem")) @ Affine.scale(2.0)
    tree.write_raster(PATCH, "dem", tree.arrays[PATCH]["dem"], transform=transform)
    return tree.path(PATCH, "dem").name


def _mask_dates_differ(tree: FlairHubTree) -> str:
    rng = np.random.default_rng(1)
    tree.write_raster(PATCH, "s2_mask", random_raster(get_modality("s2_mask"), rng, num_dates=2))
    return tree.path(PATCH, "s2_mask").name


def _drop_dates_row(tree: FlairHubTree) -> str:
    del tree.dates["SENTINEL1-ASC"][PATCH]
    tree.dates["SENTINEL1-ASC"]["D006-2020_FF-S1-14_0-0"] = [20210101]
    tree.write_dates()
    return tree.table("s1_asc").name


def _extra_date(tree: FlairHubTree) -> str:
    tree.dates["SENTINEL2"][PATCH] = [*tree.dates["SENTINEL2"][PATCH], 20211231]
    tree.write_dates()
    return tree.table("s2").name


def _two_aerial_dates(tree: FlairHubTree) -> str:
    tree.dates["AERIAL"][PATCH] = [20210601, 20210602]
    tree.write_dates()
    return tree.table("aerial").name


BAD_RASTERS: dict[str, tuple[Breaker, str]] = {
    "missing file": (_delete, "file not found"),
    "not a tiff": (_garbage, "unreadable or corrupt"),
    "truncated pixel data": (_truncate, "unreadable or corrupt"),
    "band count": (_rewrite("aerial", lambda a: a[:3]), "expected 4 bands"),
    "height/width": (_rewrite("dem", lambda a: a[:, :256, :256]), "expected 512x512"),
    "dtype": (_rewrite("aerial", lambda a: a.astype(np.uint16)), "expected dtype uint8"),
    "label dtype": (_rewrite("lc", lambda a: a.astype(np.int16)), "expected dtype uint8"),
    "series not multiple": (_rewrite("s2", lambda a: a[:-1]), "not a multiple of 10"),
    "s2 and mask dates differ": (_mask_dates_differ, "s2_mask has 2 dates but s2"),
    "lc out of range": (_with_value("lc", 0, 19), "band LC holds value 19"),
    "lpis level 2 out of range": (
        _with_value("lpis", 1, 31),
        r"band L2 holds value 31, valid values are 0\.\.30",
    ),
    "mask above max": (_with_value("s2_mask", 1, 101), "above the maximum 100"),
    "nan dem": (_with_value("dem", 1, np.nan), "1 NaN"),
    "nan s1": (_with_value("s1_asc", 0, np.nan), "1 NaN"),
    "inf s1": (_with_value("s1_asc", 0, np.inf), "non-finite"),
    "wrong crs": (_wrong_crs, "CRS is EPSG:32631"),
    "no crs": (_no_crs, "no CRS"),
    "pixel size": (_wrong_pixel_size, "0.2 m pixels"),
    "dates row missing": (_drop_dates_row, "no row in the dates table"),
    "date count": (_extra_date, "has 3 dates but the dates table lists 4"),
    "mono-temporal date count": (_two_aerial_dates, "has 1 dates but the dates table lists 2"),
}


@pytest.mark.parametrize("case", list(BAD_RASTERS))
def test_bad_input_names_patch_and_file(small: FlairHubTree, case: str) -> None:
    breaker, problem = BAD_RASTERS[case]
    file_name = breaker(small)
    reader = _reader(small)
    with pytest.raises(DataError, match=problem) as raised:
        reader.read(PATCH)
    assert raised.value.patch_id == PATCH
    assert PATCH in str(raised.value) and file_name in str(raised.value)


# -------------------------------------------------------------------------------------- split CSVs


def _edit_csv(tree: FlairHubTree, edit: Callable[[list[list[str]]], None]) -> None:
    with tree.csv("train").open() as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with tree.csv("train").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _set_cell(column: str, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[1][rows[0].index(column)] = value

    return edit


def _drop_column(column: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        index = rows[0].index(column)
        for row in rows:
            del row[index]

    return edit


@pytest.mark.parametrize(
    ("edit", "problem", "names_patch"),
    [
        (_drop_column("s2_mask"), "no column for modality 's2_mask'", False),
        (_drop_column("patch_id"), "no 'patch_id' column", False),
        (_set_cell("aerial", "../outside/x.tif"), "must be relative", True),
        (_set_cell("aerial", "/etc/x.tif"), "must be relative", True),
        (_set_cell("aerial", "C:\\data\\x.tif"), "must be relative", True),
        (_set_cell("patch_id", "not-a-patch"), "malformed patch_id", False),
        (lambda rows: rows.append(list(rows[1])), "patch listed twice", True),
    ],
)
def test_bad_split_csv(
    small: FlairHubTree, edit: Callable[[list[list[str]]], None], problem: str, names_patch: bool
) -> None:
    _edit_csv(small, edit)
    with pytest.raises(DataError, match=problem) as raised:
        _reader(small)
    assert small.csv("train").name in str(raised.value)
    if names_patch:
        assert PATCH in str(raised.value)


def test_empty_cell_means_modality_absent(small: FlairHubTree) -> None:
    _edit_csv(small, _set_cell("lpis", ""))
    sample = _reader(small)[0]
    assert "lpis" not in sample and "lpis" not in sample["meta"]["rasters"]


def test_patch_not_in_split(small: FlairHubTree) -> None:
    other = "D006-2020_FF-S1-14_9-9"
    with pytest.raises(DataError, match=f"{other}.*train.csv.*not in the 'train' split"):
        _reader(small).read(other)


def test_missing_split_csv_and_dates_table(small: FlairHubTree) -> None:
    with pytest.raises(DataError, match="test.csv.*not found"):
        _reader(small, split="test")
    small.table("s1_asc").unlink()
    with pytest.raises(DataError, match=small.table("s1_asc").name):
        _reader(small)


def test_unknown_on_error_mode(small: FlairHubTree) -> None:
    with pytest.raises(ValueError, match="on_error"):
        _reader(small, on_error="ignore")


# ------------------------------------------------------------------------------------- skip mode


def test_skip_mode_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = [PATCH, "D006-2020_FF-S1-14_3-8", "D006-2020_FF-S1-14_3-9"]
    tree = write_flairhub_tree(tmp_path, ("spot", "s2", "lc"), {"train": ids})
    tree.path(ids[1], "spot").write_bytes(b"garbage")
    with pytest.raises(DataError, match=ids[1]):
        list(_reader(tree).iter_samples())
    reader = _reader(tree, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="maestro.data.flairhub"):
        kept = [s["meta"]["patch_id"] for s in reader]
    assert kept == [ids[0], ids[2]]
    assert reader.skipped == 1 and reader.skipped_errors[0].patch_id == ids[1]
    assert ids[1] in caplog.text
    with pytest.raises(DataError):  # map-style access always raises
        reader[1]


# ------------------------------------------------------------------- encodings, dates rows, NaN


def test_non_utf8_split_csv_says_to_resave(small: FlairHubTree) -> None:
    text = small.csv("train").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    lines.append(lines[1].replace(PATCH, "D006-2020_Ré-S1-14_3-8"))
    small.csv("train").write_bytes("".join(lines).encode("cp1252"))
    with pytest.raises(
        DataError,
        match=r"train\.csv: split CSV is not UTF-8 text \(byte 0xe9 on line 3\); "
        r"re-save it as UTF-8",
    ):
        _reader(small)


def test_malformed_dates_row_fails_only_its_patch(tmp_path: Path) -> None:
    import sqlite3

    ids = [PATCH, "D006-2020_FF-S1-14_3-8"]
    tree = write_flairhub_tree(tmp_path, ("s2", "s2_mask"), {"train": ids})
    connection = sqlite3.connect(tree.table("s2"))
    with connection:
        connection.execute(
            f'UPDATE "{tree.table("s2").stem}" SET acquisition_dates = ? WHERE patch_id = ?',
            ('{"0": "20211340"}', ids[0]),
        )
    connection.close()
    reader = _reader(tree, on_error="skip")  # constructing the reader no longer fails
    assert [s["meta"]["patch_id"] for s in reader] == [ids[1]]
    assert reader.skipped_errors[0].patch_id == ids[0] and tree.table("s2").name in str(
        reader.skipped_errors[0]
    )


def test_allow_nan_keeps_non_finite_pixels(small: FlairHubTree) -> None:
    _with_value("s1_asc", 0, np.nan)(small)
    with pytest.raises(DataError, match="1 NaN"):
        _reader(small).read(PATCH)
    sample = _reader(small, allow_nan=True).read(PATCH)
    assert int(np.isnan(sample["s1_asc"]).sum()) == 1
    labels = _with_value("lc", 0, 19)
    labels(small)
    with pytest.raises(DataError, match="holds value 19"):  # the other value checks still apply
        _reader(small, allow_nan=True).read(PATCH)


def test_source_state_names_each_file(small: FlairHubTree) -> None:
    reader = _reader(small)
    state = reader.source_state(PATCH)
    path = small.path(PATCH, "aerial")
    assert state["aerial"] == [
        str(path.relative_to(small.root)),
        path.stat().st_size,
        path.stat().st_mtime_ns,
    ]
    before = state["dates:SENTINEL2"]
    small.dates["SENTINEL2"][PATCH] = [20200101 + i for i in range(len(small.dates["SENTINEL2"][PATCH]))]
    small.write_dates()
    assert len(before) == 16 and _reader(small).source_state(PATCH)["dates:SENTINEL2"] != before
    path.unlink()
    assert reader.source_state(PATCH)["aerial"][1:] == [None, None]


def test_reader_defaults_to_the_maestro_inputs_and_their_masks(toy_root):
    from maestro.data.flairhub import FlairHubReader
    from maestro.modalities import DEFAULT_INPUTS

    reader = FlairHubReader(toy_root, split="train")
    assert [m.key for m in reader.modalities] == [*DEFAULT_INPUTS, "s2_mask"]
    assert set(reader[0]) >= {*DEFAULT_INPUTS, "s2_mask"}
