"""Dates GeoPackages of a FLAIR-HUB tree from a plain CSV (``shards dates --from-csv``).

FLAIR-HUB keeps the acquisition dates of its time series in GeoPackages
(``GLOBAL_ALL_MTD/GLOBAL_{TABLE}_MTD_DATES.gpkg``), a format few users can write by hand. Users
with their own patches list the dates in a CSV instead, one row per patch and modality::

    patch_id,modality,dates
    D006-2020_FF-S1-14_3-7,aerial,20200612
    D006-2020_FF-S1-14_3-7,s2,20210105 20210110 20210214

``modality`` is a modality key with a dates table (``aerial``, ``spot``, ``s2``, ``s1_asc``,
``s1_des``; a mask shares its image's dates) or the table's name (``SENTINEL2``). ``dates`` lists
``YYYYMMDD`` dates separated by spaces or semicolons, in the order of the raster's dates. Every
row is checked against the tree before anything is written, so a typo cannot produce a table row
that no raster reads.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from maestro.data.layout import (
    METADATA_DIR,
    PATCH_ID_COLUMN,
    SPLIT_NAME,
    PatchId,
    dates_table_path,
    raster_relpath,
)
from maestro.data.metadata import write_dates_table
from maestro.data.splits import read_split_csv
from maestro.dates import parse_yyyymmdd
from maestro.errors import DataError
from maestro.modalities import MODALITIES, Modality

log = logging.getLogger(__name__)

COLUMNS = (PATCH_ID_COLUMN, "modality", "dates")
_SEPARATOR = re.compile(r"[\s;]+")


def dated_modalities() -> dict[str, Modality]:
    """Names the ``modality`` column accepts -> the image modality whose raster the dates are of:
    every modality key with a dates table (masks excepted) and every table name."""
    names: dict[str, Modality] = {}
    for modality in MODALITIES.values():
        if modality.dates_table is not None and modality.companion_of is None:
            names[modality.key] = modality
            names.setdefault(modality.dates_table, modality)
    return names


@dataclass
class _Rasters:
    """Which (patch, modality) rasters the tree holds: the FLAIR-HUB layout path, or a path listed
    in one of the tree's split CSVs (read once, only when a layout path is missing)."""

    root: Path
    split_name: str
    _listed: set[tuple[str, str]] | None = field(default=None, init=False)

    def has(self, patch_id: str, modality: Modality) -> bool:
        if (self.root / raster_relpath(modality, PatchId.parse(patch_id))).is_file():
            return True
        if self._listed is None:
            self._listed = self._from_split_csvs()
        return (patch_id, modality.key) in self._listed

    def _from_split_csvs(self) -> set[tuple[str, str]]:
        listed: set[tuple[str, str]] = set()
        for path in sorted((self.root / self.split_name).glob("*.csv")):
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                header = {name.strip() for name in next(csv.reader(handle), [])}
            keys = [m.key for m in dated_modalities().values() if {m.key, m.folder_suffix} & header]
            for entry in read_split_csv(path, dict.fromkeys(keys)):
                listed.update(
                    (entry.patch_id, k) for k, p in entry.paths.items() if (self.root / p).is_file()
                )
        return listed


def read_dates_csv(path: Path, root: Path, split_name: str = SPLIT_NAME) -> dict[str, dict[str, list[int]]]:
    """Dates table -> patch id -> ``YYYYMMDD`` dates, from the CSV at ``path``.

    Any problem is a DataError naming the file and the line: not UTF-8, a bad header, an unknown
    modality, a malformed patch id or one without that raster under ``root``, a date that is not a
    calendar date, a mono-temporal modality with several dates, or a patch listed twice for a table.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("dates CSV not found", path=path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"line {line}: not UTF-8 text (byte 0x{raw[error.start : error.start + 1].hex()}); re-save "
            "the CSV as UTF-8",
            path=path,
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader, [])]
    if sorted(header) != sorted(COLUMNS):
        raise DataError(f"line 1: the header must name the columns {list(COLUMNS)}, got {header}", path=path)
    names = dated_modalities()
    rasters = _Rasters(Path(root), split_name)
    tables: dict[str, dict[str, list[int]]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        try:
            patch_id, modality, dates = _parse_row(cells, header, names)
            table = str(modality.dates_table)
            if (table, patch_id) in first_line:
                raise ValueError(
                    f"patch {patch_id} is listed twice for table {table} (also line {first_line[table, patch_id]})"
                )
            if not rasters.has(patch_id, modality):
                raise ValueError(
                    f"unknown patch {patch_id}: no {modality.key} raster in {root} (neither at "
                    f"{raster_relpath(modality, PatchId.parse(patch_id))} nor listed in {split_name}/*.csv)"
                )
        except ValueError as error:
            raise DataError(f"line {reader.line_num}: {error}", path=path) from None
        first_line[table, patch_id] = reader.line_num
        tables.setdefault(table, {})[patch_id] = dates
    if not tables:
        raise DataError("no rows under the header", path=path)
    return tables


def _parse_row(
    cells: list[str], header: list[str], names: Mapping[str, Modality]
) -> tuple[str, Modality, list[int]]:
    """(patch id, modality, dates) of one CSV row; a ValueError says what is wrong with it."""
    if len(cells) != len(header):
        raise ValueError(f"{len(cells)} cells, the header has {len(header)}")
    row = dict(zip(header, (cell.strip() for cell in cells), strict=True))
    patch_id = row[PATCH_ID_COLUMN]
    PatchId.parse(patch_id)
    modality = names.get(row["modality"])
    if modality is None:
        raise ValueError(f"unknown modality {row['modality']!r}; modalities with dates are {sorted(names)}")
    try:
        dates = [parse_yyyymmdd(text) for text in _SEPARATOR.split(row["dates"]) if text]
    except ValueError as error:
        raise ValueError(f"patch {patch_id}: {error}") from None
    if not dates:
        raise ValueError(f"patch {patch_id}: no date")
    if not modality.temporal and len(dates) != 1:
        raise ValueError(
            f"patch {patch_id}: {modality.key} is mono-temporal, one date per patch, got {len(dates)}"
        )
    return patch_id, modality, dates


def write_dates_geopackages(
    tables: Mapping[str, Mapping[str, list[int]]], root: Path, force: bool = False
) -> list[Path]:
    """Write each table where the FLAIR-HUB reader looks for it; an existing GeoPackage is only
    replaced with ``force`` (all are checked before the first is written)."""
    targets = {table: dates_table_path(root, table) for table in tables}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); --force replaces them")
    folder = Path(root) / METADATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=".dates-", dir=folder)
    )  # whole files appear, never half-written ones
    try:
        for table, target in targets.items():
            write_dates_table(scratch / target.name, tables[table])
            os.replace(scratch / target.name, target)
            log.info("wrote %s: dates of %d patches", target, len(tables[table]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return list(targets.values())
