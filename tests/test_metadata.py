"""Dates GeoPackages: round trip, GeoPackage structure, and every malformed-table error."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from maestro.data.layout import dates_table_path
from maestro.data.metadata import clear_cache, load_dates_table, read_dates_table, write_dates_table
from maestro.errors import DataError

PATCH = "D006-2020_FF-S1-14_3-7"
OTHER = "D006-2020_FF-S1-14_3-8"


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    return dates_table_path(tmp_path, "SENTINEL2")


def _overwrite_cell(path: Path, patch_id: str, value: str) -> None:
    """Corrupt one row in place, as a broken export would."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            f'UPDATE "{path.stem}" SET acquisition_dates = ? WHERE patch_id = ?', (value, patch_id)
        )
    connection.close()


def test_round_trip_values_and_dtype(table: Path) -> None:
    rows = {PATCH: [20210104, 20210119, 20211231], OTHER: [20200229]}
    write_dates_table(table, rows)
    out = read_dates_table(table)
    assert set(out) == set(rows)
    for patch_id, dates in rows.items():
        assert out[patch_id].dtype == np.int32
        np.testing.assert_array_equal(out[patch_id], dates)


def test_file_is_a_geopackage(table: Path) -> None:
    write_dates_table(table, {PATCH: [20210104]})
    connection = sqlite3.connect(table)
    assert connection.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert connection.execute("PRAGMA user_version").fetchone()[0] >= 10200
    srs = {row[0] for row in connection.execute("SELECT srs_id FROM gpkg_spatial_ref_sys")}
    assert {-1, 0, 4326, 2154} <= srs
    contents = connection.execute("SELECT table_name, data_type, srs_id FROM gpkg_contents").fetchall()
    assert contents == [(table.stem, "attributes", 2154)]
    (cell,) = connection.execute(f'SELECT acquisition_dates FROM "{table.stem}"').fetchone()
    assert json.loads(cell) == {"0": "20210104"}
    connection.close()


def test_positions_are_ordered_by_number_not_text(table: Path) -> None:
    dates = [20210101 + i for i in range(12)]
    write_dates_table(table, {PATCH: dates})
    shuffled = {str(i): str(d) for i, d in reversed(list(enumerate(dates)))}
    _overwrite_cell(table, PATCH, json.dumps(shuffled))
    np.testing.assert_array_equal(read_dates_table(table)[PATCH], dates)


def test_cache_returns_same_arrays_and_sees_rewrites(table: Path) -> None:
    write_dates_table(table, {PATCH: [20210104]})
    first, second = read_dates_table(table), read_dates_table(table)
    assert first[PATCH] is second[PATCH]
    assert not first[PATCH].flags.writeable
    first.pop(PATCH)
    assert PATCH in read_dates_table(table)
    write_dates_table(table, {PATCH: [20210104, 20210105]})
    assert read_dates_table(table)[PATCH].shape == (2,)
    clear_cache()
    assert read_dates_table(table)[PATCH].shape == (2,)


def test_missing_file(table: Path) -> None:
    with pytest.raises(DataError, match=table.name):
        read_dates_table(table)


def test_not_sqlite(table: Path) -> None:
    table.parent.mkdir(parents=True)
    table.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=f"{table.name}.*not a GeoPackage"):
        read_dates_table(table)


def test_sqlite_but_not_geopackage(table: Path) -> None:
    table.parent.mkdir(parents=True)
    connection = sqlite3.connect(table)
    with connection:
        connection.execute("CREATE TABLE t (patch_id TEXT, acquisition_dates TEXT)")
    connection.close()
    with pytest.raises(DataError, match="not a GeoPackage"):
        read_dates_table(table)


def test_no_suitable_table(table: Path) -> None:
    write_dates_table(table, {PATCH: [20210104]})
    connection = sqlite3.connect(table)
    with connection:
        connection.execute(f'ALTER TABLE "{table.stem}" RENAME COLUMN acquisition_dates TO dates')
    connection.close()
    with pytest.raises(DataError, match=f"{table.name}.*no table with columns"):
        read_dates_table(table)


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[20210104]", "JSON object"),
        ("{}", "zero dates"),
        ('{"0": "20210104", "2": "20210105"}', r"positions must be 0\.\.1"),
        ('{"1": "20210104"}', r"positions must be 0\.\.0"),
        ('{"a": "20210104"}', "positions must be integers"),
        ('{"0": "20210230"}', "not a valid calendar date"),
        ('{"0": "2021-01-04"}', "not YYYYMMDD"),
    ],
)
def test_bad_cell_names_patch_and_file(table: Path, cell: str, problem: str) -> None:
    write_dates_table(table, {OTHER: [20210104], PATCH: [20210104]})
    _overwrite_cell(table, PATCH, cell)
    with pytest.raises(DataError, match=problem) as raised:
        read_dates_table(table)
    assert raised.value.patch_id == PATCH
    assert PATCH in str(raised.value) and table.name in str(raised.value)


def test_duplicate_patch_id(table: Path) -> None:
    write_dates_table(table, {PATCH: [20210104], OTHER: [20210105]})
    connection = sqlite3.connect(table)
    with connection:
        connection.execute(f'UPDATE "{table.stem}" SET patch_id = ? WHERE patch_id = ?', (PATCH, OTHER))
    connection.close()
    with pytest.raises(DataError, match=f"{PATCH}.*{table.name}.*twice"):
        read_dates_table(table)


def test_writer_rejects_invalid_dates(table: Path) -> None:
    with pytest.raises(ValueError, match="calendar"):
        write_dates_table(table, {PATCH: [20210231]})


def test_malformed_row_is_an_error_of_its_patch_only(table: Path) -> None:
    write_dates_table(table, {OTHER: [20210104], PATCH: [20210104]})
    _overwrite_cell(table, PATCH, "{not json")
    loaded = load_dates_table(table)
    np.testing.assert_array_equal(loaded.dates_of(OTHER), [20210104])
    assert loaded.dates_of("D006-2020_FF-S1-14_9-9") is None
    with pytest.raises(DataError, match="not valid JSON") as raised:
        loaded.dates_of(PATCH)
    assert raised.value.patch_id == PATCH and table.name in str(raised.value)
    with pytest.raises(DataError, match="not valid JSON"):  # the strict reader still refuses the table
        read_dates_table(table)


def test_duplicated_patch_is_bad_the_others_read(table: Path) -> None:
    write_dates_table(table, {PATCH: [20210104], OTHER: [20210105], "D006-2020_FF-S1-14_3-9": [20210106]})
    connection = sqlite3.connect(table)
    with connection:
        connection.execute(f'UPDATE "{table.stem}" SET patch_id = ? WHERE patch_id = ?', (PATCH, OTHER))
    connection.close()
    loaded = load_dates_table(table)
    with pytest.raises(DataError, match="twice"):
        loaded.dates_of(PATCH)
    np.testing.assert_array_equal(loaded.dates_of("D006-2020_FF-S1-14_3-9"), [20210106])
