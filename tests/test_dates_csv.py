"""Dates GeoPackages from a CSV (``shards dates --from-csv``): what the FLAIR-HUB reader reads
back, and every bad row refused with the file and line before anything is written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_flairhub import FlairHubTree, write_flairhub_tree

from maestro.data.dates_csv import dated_modalities, read_dates_csv
from maestro.data.flairhub import FlairHubReader
from maestro.data.layout import METADATA_DIR
from maestro.errors import DataError
from maestro.modalities import get_modality
from maestro.sample import DATES
from shards.cli import main

MODALITIES = ("aerial", "s2", "s2_mask", "s1_asc")
PATCHES = ["D006-2020_FF-S1-14_3-7", "D006-2020_FF-S1-14_3-8"]


@pytest.fixture()
def tree(tmp_path: Path) -> FlairHubTree:
    """A tree whose dates GeoPackages are removed: the CSV has to bring them back."""
    tree = write_flairhub_tree(tmp_path / "hub", MODALITIES, {"train": PATCHES})
    shutil.rmtree(tree.root / METADATA_DIR)
    return tree


def _csv_lines(tree: FlairHubTree, separator: str = " ") -> list[str]:
    """patch_id,modality,dates rows of every dates table of ``tree`` (named by an image modality)."""
    lines = ["patch_id,modality,dates"]
    for key in ("aerial", "s2", "s1_asc"):
        for patch_id, dates in tree.dates[str(get_modality(key).dates_table)].items():
            lines.append(f"{patch_id},{key},{separator.join(map(str, dates))}")
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("separator", [" ", ";", " ; "])
def test_the_reader_reads_back_the_dates_of_the_csv(
    tree: FlairHubTree, tmp_path: Path, separator: str
) -> None:
    csv_path = _write(tmp_path / "dates.csv", _csv_lines(tree, separator))
    assert main(["dates", "--root", str(tree.root), "--from-csv", str(csv_path)]) == 0
    reader = FlairHubReader(tree.root, MODALITIES, split="train")
    for patch_id in PATCHES:
        dates = reader.read(patch_id)[DATES]
        for key in MODALITIES:
            expected = tree.dates[str(get_modality(key).dates_table)][patch_id]
            np.testing.assert_array_equal(dates[key], expected)


def test_an_existing_geopackage_is_replaced_only_with_force(
    tree: FlairHubTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv_path = _write(tmp_path / "dates.csv", _csv_lines(tree))
    command = ["dates", "--root", str(tree.root), "--from-csv", str(csv_path)]
    assert main(command) == 0
    table = tree.table("s2")
    before = table.stat().st_mtime_ns
    assert main(command) == 2
    assert _errors(caplog) == [
        f"error: {tree.table('aerial')}, {table}, {tree.table('s1_asc')} already exist(s); --force replaces them"
    ]
    assert table.stat().st_mtime_ns == before
    lines = _csv_lines(tree)
    lines[3] = f"{PATCHES[0]},s2,20210101 20210102 20210103"  # first s2 row, 3 dates like its raster
    tree.dates["SENTINEL2"][PATCHES[0]] = [20210101, 20210102, 20210103]
    _write(csv_path, lines)
    assert main([*command, "--force"]) == 0
    dates = FlairHubReader(tree.root, MODALITIES, split="train").read(PATCHES[0])[DATES]
    np.testing.assert_array_equal(dates["s2"], [20210101, 20210102, 20210103])
    assert not list((tree.root / METADATA_DIR).glob(".dates-*"))  # no scratch files left


UNKNOWN = "D006-2020_FF-S1-14_9-9"
"""A well-formed patch id with no raster in the tree."""


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            f"{PATCHES[0]},s2,20210105 20210230 20210301",
            f"patch {PATCHES[0]}: date '20210230' is not a valid calendar date",
        ),
        (f"{PATCHES[0]},s2,2021-01-05", "date '2021-01-05' is not YYYYMMDD"),
        (f"{PATCHES[0]},s2,", f"patch {PATCHES[0]}: no date"),
        (f"{PATCHES[0]},sentinel9,20210105", "unknown modality 'sentinel9'; modalities with dates are"),
        (f"{PATCHES[0]},s2_mask,20210105", "unknown modality 's2_mask'"),
        (f"{UNKNOWN},s2,20210105", f"unknown patch {UNKNOWN}: no s2 raster in"),
        ("patch-7,s2,20210105", "malformed patch_id 'patch-7'"),
        (f"{PATCHES[0]},aerial,20200601 20200602", "aerial is mono-temporal, one date per patch, got 2"),
        (f"{PATCHES[0]},s1_asc", "2 cells, the header has 3"),
    ],
    ids=["calendar", "format", "empty", "modality", "mask", "unknown-patch", "patch-id", "mono", "cells"],
)
def test_a_bad_row_is_one_error_naming_the_file_and_line_and_nothing_is_written(
    tree: FlairHubTree, tmp_path: Path, caplog: pytest.LogCaptureFixture, row: str, message: str
) -> None:
    lines = _csv_lines(tree)
    lines.insert(3, row)
    csv_path = _write(tmp_path / "dates.csv", lines)
    assert main(["dates", "--root", str(tree.root), "--from-csv", str(csv_path)]) == 2
    (error,) = _errors(caplog)
    assert error.startswith(f"error: file {csv_path}: line 4: ") and message in error, error
    assert not (tree.root / METADATA_DIR).exists()


def test_a_patch_listed_twice_for_a_table_names_both_lines(
    tree: FlairHubTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _csv_lines(tree)
    lines.append(lines[3].replace(",s2,", ",SENTINEL2,"))  # the table's name is another spelling of s2
    csv_path = _write(tmp_path / "dates.csv", lines)
    assert main(["dates", "--root", str(tree.root), "--from-csv", str(csv_path)]) == 2
    assert _errors(caplog) == [
        f"error: file {csv_path}: line {len(lines)}: patch {PATCHES[0]} is listed twice for table SENTINEL2 (also line 4)"
    ]


def test_a_csv_that_is_not_utf8_or_lacks_the_header_is_refused(
    tree: FlairHubTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _csv_lines(tree)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(("\n".join(lines[:3]) + "\n").encode() + b"D006-2020_\xe9,s2,20210105\n")
    headless = _write(tmp_path / "headless.csv", lines[1:])
    empty = _write(tmp_path / "empty.csv", lines[:1])
    for path in (latin1, headless, empty):
        assert main(["dates", "--root", str(tree.root), "--from-csv", str(path)]) == 2
    assert _errors(caplog) == [
        f"error: file {latin1}: line 4: not UTF-8 text (byte 0xe9); re-save the CSV as UTF-8",
        f"error: file {headless}: line 1: the header must name the columns ['patch_id', 'modality', 'dates'], "
        f"got {lines[1].split(',')}",
        f"error: file {empty}: no rows under the header",
    ]
    assert not (tree.root / METADATA_DIR).exists()


def test_a_raster_listed_in_a_split_csv_outside_the_layout_is_known(
    tree: FlairHubTree, tmp_path: Path
) -> None:
    """The reader takes raster paths from the split CSVs: a patch is known where they put it."""
    moved = Path("custom") / "s2_first.tif"
    (tree.root / "custom").mkdir()
    tree.path(PATCHES[0], "s2").rename(tree.root / moved)
    entry = tree.splits["train"][0]
    tree.splits["train"][0] = type(entry)(entry.patch_id, {**entry.paths, "s2": moved.as_posix()})
    tree.write_csvs()
    csv_path = _write(tmp_path / "dates.csv", _csv_lines(tree))
    tables = read_dates_csv(csv_path, tree.root)
    assert tables["SENTINEL2"] == tree.dates["SENTINEL2"]
    (tree.root / moved).unlink()
    with pytest.raises(DataError, match=f"line 4: unknown patch {PATCHES[0]}: no s2 raster"):
        read_dates_csv(csv_path, tree.root)


def test_every_modality_with_dates_is_named_by_key_and_by_table() -> None:
    names = dated_modalities()
    assert {"aerial", "spot", "s2", "s1_asc", "s1_des", "SENTINEL2", "SENTINEL1-DESC"} <= set(names)
    assert "s2_mask" not in names and "dem" not in names
