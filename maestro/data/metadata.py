"""FLAIR-HUB acquisition-date tables (``GLOBAL_ALL_MTD/GLOBAL_{TABLE}_MTD_DATES.gpkg``).

Time-series GeoTIFFs carry no dates: the dates live in GeoPackages (SQLite files) whose rows hold
``patch_id`` and ``acquisition_dates``, a JSON mapping of position to ``YYYYMMDD``. This module
reads them with the standard library only (no geopandas/fiona: the tables are plain attribute
rows, and a GDAL vector stack would be a heavy dependency for one JSON column), and writes the
same format for tests and the toy dataset. A malformed row is kept as that patch's error
(:class:`DatesTable`), so one bad row never makes the other patches unreadable.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maestro.data.layout import PATCH_ID_COLUMN
from maestro.dates import parse_yyyymmdd
from maestro.errors import DataError

log = logging.getLogger(__name__)

DATES_COLUMN = "acquisition_dates"

GPKG_APPLICATION_IDS = frozenset({0x47504B47, 0x47503130, 0x47503131})
"""``GPKG`` (1.2+) and the older ``GP10`` / ``GP11`` magic numbers in the SQLite header."""
GPKG_USER_VERSION = 10300

_LAMBERT93_WKT = (
    'PROJCS["RGF93 v1 / Lambert-93",GEOGCS["RGF93 v1",DATUM["Reseau_Geodesique_Francais_1993_v1",'
    'SPHEROID["GRS 1980",6378137,298.257222101,AUTHORITY["EPSG","7019"]],AUTHORITY["EPSG","6171"]],'
    'PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,'
    'AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4171"]],PROJECTION["Lambert_Conformal_Conic_2SP"],'
    'PARAMETER["latitude_of_origin",46.5],PARAMETER["central_meridian",3],'
    'PARAMETER["standard_parallel_1",49],PARAMETER["standard_parallel_2",44],'
    'PARAMETER["false_easting",700000],PARAMETER["false_northing",6600000],'
    'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],'
    'AUTHORITY["EPSG","2154"]]'
)

# Rows required by the GeoPackage spec (undefined cartesian / geographic) plus Lambert-93.
_SPATIAL_REF_ROWS = (
    (
        "Undefined cartesian SRS",
        -1,
        "NONE",
        -1,
        "undefined",
        "undefined cartesian coordinate reference system",
    ),
    (
        "Undefined geographic SRS",
        0,
        "NONE",
        0,
        "undefined",
        "undefined geographic coordinate reference system",
    ),
    (
        "WGS 84 geodetic",
        4326,
        "EPSG",
        4326,
        'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]',
        "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid",
    ),
    ("RGF93 v1 / Lambert-93", 2154, "EPSG", 2154, _LAMBERT93_WKT, "FLAIR-HUB projection"),
)


def _quote(identifier: str) -> str:
    """SQL identifier quoting: table names come from the file, never trust them in raw SQL."""
    return '"' + identifier.replace('"', '""') + '"'


def write_dates_table(path: Path, rows: Mapping[str, Sequence[int]]) -> None:
    """Write a GeoPackage attributes table of ``patch_id`` -> acquisition dates (``YYYYMMDD``).

    Produces the same shape of file the reader expects from the real dataset, so tests and the toy
    dataset exercise the real parsing path. An existing file is replaced.
    """
    path = Path(path)
    encoded = []
    for patch_id, dates in rows.items():
        mapping = {str(i): f"{parse_yyyymmdd(d):08d}" for i, d in enumerate(dates)}
        encoded.append((patch_id, json.dumps(mapping)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    table = path.stem
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute(f"PRAGMA application_id = {0x47504B47}")
            connection.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
            connection.execute(
                "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, "
                "organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, "
                "definition TEXT NOT NULL, description TEXT)"
            )
            connection.executemany(
                "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _SPATIAL_REF_ROWS
            )
            connection.execute(
                "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, "
                "identifier TEXT UNIQUE, description TEXT DEFAULT '', "
                "last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), "
                "min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER, "
                "CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))"
            )
            connection.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
                "VALUES (?, 'attributes', ?, 'FLAIR-HUB acquisition dates', 2154)",
                (table, table),
            )
            connection.execute(
                f"CREATE TABLE {_quote(table)} (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
                f"{PATCH_ID_COLUMN} TEXT NOT NULL, {DATES_COLUMN} TEXT NOT NULL)"
            )
            connection.executemany(
                f"INSERT INTO {_quote(table)} ({PATCH_ID_COLUMN}, {DATES_COLUMN}) VALUES (?, ?)", encoded
            )
    finally:
        connection.close()


def parse_dates_json(text: object, *, patch_id: str, path: Path) -> np.ndarray:
    """One ``acquisition_dates`` cell -> int32 ``YYYYMMDD`` array in position order.

    Positions must be exactly ``0..n-1``: a gap would shift every later date onto the wrong raster
    bands, which is silent corruption, so it is an error rather than a sort.
    """
    try:
        mapping = json.loads(text) if isinstance(text, str | bytes) else None
    except json.JSONDecodeError as error:
        raise DataError(
            f"acquisition_dates is not valid JSON ({error})", patch_id=patch_id, path=path
        ) from None
    if not isinstance(mapping, dict):
        raise DataError(
            f"acquisition_dates must be a JSON object of position -> YYYYMMDD, got {text!r:.80}",
            patch_id=patch_id,
            path=path,
        )
    if not mapping:
        raise DataError("acquisition_dates holds zero dates", patch_id=patch_id, path=path)
    try:
        positions = {int(str(key)): value for key, value in mapping.items()}
    except ValueError:
        raise DataError(
            f"acquisition_dates positions must be integers, got {sorted(mapping)[:5]}",
            patch_id=patch_id,
            path=path,
        ) from None
    if len(positions) != len(mapping) or sorted(positions) != list(range(len(positions))):
        raise DataError(
            f"acquisition_dates positions must be 0..{len(mapping) - 1}, got {sorted(mapping, key=str)[:10]}",
            patch_id=patch_id,
            path=path,
        )
    try:
        dates = [parse_yyyymmdd(positions[i]) for i in range(len(positions))]
    except ValueError as error:
        raise DataError(f"acquisition_dates: {error}", patch_id=patch_id, path=path) from None
    return np.asarray(dates, dtype=np.int32)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def _check_geopackage(connection: sqlite3.Connection, path: Path) -> None:
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        has_contents = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gpkg_contents'"
        ).fetchone()
    except sqlite3.DatabaseError as error:
        raise DataError(f"not a GeoPackage / SQLite file ({error})", path=path) from None
    if application_id not in GPKG_APPLICATION_IDS or not has_contents:
        raise DataError(
            f"not a GeoPackage (application_id {application_id:#x}, gpkg_contents "
            f"{'present' if has_contents else 'missing'})",
            path=path,
        )


def _find_dates_table(connection: sqlite3.Connection, path: Path) -> str:
    """The table listed in ``gpkg_contents`` that has both the ``patch_id`` and dates columns.

    The table name differs between releases and the dates layer may be an ``attributes`` or a
    ``features`` table, so the columns, not the name, identify it.
    """
    tables = [
        row[0] for row in connection.execute("SELECT table_name FROM gpkg_contents ORDER BY table_name")
    ]
    matches = []
    for table in tables:
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({_quote(table)})")}
        if {PATCH_ID_COLUMN, DATES_COLUMN} <= columns:
            matches.append(table)
    if len(matches) != 1:
        problem = "no table" if not matches else f"{len(matches)} tables ({matches})"
        raise DataError(
            f"{problem} with columns {PATCH_ID_COLUMN!r} and {DATES_COLUMN!r} among gpkg_contents {tables}",
            path=path,
        )
    return matches[0]


@dataclass(frozen=True)
class DatesTable:
    """One parsed dates table: good rows, and the rows that failed with their error.

    A malformed row is the problem of its patch only: keeping its error here lets a build skip
    that patch (``--skip-bad``) instead of refusing the whole table.
    """

    path: Path
    rows: Mapping[str, np.ndarray]
    """``patch_id`` -> read-only int32 ``YYYYMMDD`` dates, position order."""
    bad_rows: Mapping[str, DataError] = field(default_factory=dict)
    """``patch_id`` -> why its row cannot be used (bad JSON, bad date, listed twice, ...)."""

    def dates_of(self, patch_id: str) -> np.ndarray | None:
        """The patch's dates; ``None`` without a row; its row's DataError for a malformed row."""
        error = self.bad_rows.get(patch_id)
        if error is not None:
            raise DataError(error.problem, patch_id=error.patch_id, path=error.path)
        return self.rows.get(patch_id)


def _load(path: Path) -> DatesTable:
    if not path.is_file():
        raise DataError("dates table not found", path=path)
    connection = _connect_read_only(path)
    try:
        _check_geopackage(connection, path)
        table = _find_dates_table(connection, path)
        cursor = connection.execute(f"SELECT {PATCH_ID_COLUMN}, {DATES_COLUMN} FROM {_quote(table)}")
        out: dict[str, np.ndarray] = {}
        bad: dict[str, DataError] = {}
        for patch_id, text in cursor:
            patch_id = str(patch_id)
            if patch_id in out or patch_id in bad:
                out.pop(patch_id, None)
                bad[patch_id] = DataError(
                    "patch_id appears twice in the dates table", patch_id=patch_id, path=path
                )
                continue
            try:
                dates = parse_dates_json(text, patch_id=patch_id, path=path)
            except DataError as error:
                bad[patch_id] = error
                continue
            dates.flags.writeable = False
            out[patch_id] = dates
    except sqlite3.DatabaseError as error:
        raise DataError(f"cannot read GeoPackage ({error})", path=path) from None
    finally:
        connection.close()
    if bad:
        log.warning(
            "%s: %d malformed rows (those patches are bad, the others are read), e.g. %s",
            path,
            len(bad),
            next(iter(bad.values())),
        )
    log.debug("read %d date rows from %s", len(out), path)
    return DatesTable(path, out, bad)


_cache: dict[tuple[str, int, int, int], DatesTable] = {}
_cache_lock = threading.Lock()


def load_dates_table(path: Path) -> DatesTable:
    """The parsed table with per-row errors kept apart (what the reader uses).

    Tables hold one row per patch of the whole dataset (~240k rows), so parsed tables are cached
    per file; the key includes the file's mtime, size and inode so a rewritten file is re-read.
    Arrays are read-only because they are shared between callers.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise DataError("dates table not found", path=path) from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is None:
        cached = _load(path)
        with _cache_lock:
            for stale in [k for k in _cache if k[0] == key[0]]:
                del _cache[stale]
            _cache[key] = cached
    return cached


def read_dates_table(path: Path) -> dict[str, np.ndarray]:
    """``patch_id`` -> int32 ``YYYYMMDD`` dates (position order); any malformed row is an error.

    Strict form of :func:`load_dates_table` (the first bad row, in table order, is raised); the
    returned dict is a fresh copy of the cached one.
    """
    table = load_dates_table(path)
    for patch_id in table.bad_rows:
        table.dates_of(patch_id)  # raises that row's error
    return dict(table.rows)


def clear_cache() -> None:
    """Forget parsed tables (tests, or long-lived processes switching datasets)."""
    with _cache_lock:
        _cache.clear()
