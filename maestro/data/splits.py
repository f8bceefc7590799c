"""Which patches a FLAIR-HUB split holds: split CSVs, or a scan of the folder tree.

The official splits are CSVs (``{root}/{split_name}/{split}.csv``) with a ``patch_id`` column and
one column per modality holding the raster's path relative to the root; without them, the folder
tree is scanned and whole domains are assigned to splits. Paths are checked so that a CSV can
never point outside the dataset root.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from maestro.data.layout import PATCH_ID_COLUMN, PatchId, raster_relpath
from maestro.errors import DataError
from maestro.modalities import Modality, resolve

log = logging.getLogger(__name__)

_FOLDER = re.compile(r"^(?P<domain>D\d{3}-[0-9X]{4})_(?P<suffix>.+)$")


@dataclass(frozen=True)
class PatchEntry:
    """One patch of a split: its id and the raster of each modality it has, relative to the root."""

    patch_id: str
    paths: Mapping[str, PurePosixPath] = field(default_factory=dict)


def _safe_relpath(text: str, *, patch_id: str, source: Path) -> PurePosixPath:
    """A CSV path, relative to the root and unable to leave it (no absolute paths, no '..')."""
    relpath = PurePosixPath(text.replace("\\", "/"))
    if relpath.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in relpath.parts:
        raise DataError(
            f"raster path {text!r} must be relative to the dataset root, without '..'",
            patch_id=patch_id,
            path=source,
        )
    return relpath


def _column_for(modality: Modality, header: Sequence[str], source: Path) -> str:
    """The CSV column of a modality: its key (``s2_mask``) or its folder suffix (``SENTINEL2_MSK-SC``)."""
    for name in (modality.key, modality.folder_suffix):
        if name in header:
            return name
    raise DataError(
        f"no column for modality {modality.key!r} (expected {modality.key!r} or {modality.folder_suffix!r}); "
        f"columns are {list(header)}",
        path=source,
    )


def read_split_csv(path: Path, modalities: Iterable[str]) -> list[PatchEntry]:
    """Patches of one split CSV, in file order; an empty cell means the patch lacks that modality.

    The file must be UTF-8 (a BOM is fine); a spreadsheet export in another encoding is refused
    with the line it failed on rather than read with mangled paths.
    """
    path = Path(path)
    entries = resolve(modalities)
    if not path.is_file():
        raise DataError("split CSV not found", path=path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            return _read_rows(reader, entries, path)
        except UnicodeDecodeError:
            raise DataError(
                f"split CSV is not UTF-8 text ({_first_non_utf8(path)}); re-save it as UTF-8 "
                "(e.g. 'CSV UTF-8' in a spreadsheet, or iconv -f latin1 -t utf-8)",
                path=path,
            ) from None


def _first_non_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is, for the error message."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"byte 0x{line[error.start : error.start + 1].hex()} on line {number}"
    return "undecodable bytes"


def _read_rows(reader: csv.DictReader, entries: Sequence[Modality], path: Path) -> list[PatchEntry]:
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    if PATCH_ID_COLUMN not in header:
        raise DataError(f"split CSV has no {PATCH_ID_COLUMN!r} column; columns are {header}", path=path)
    columns = {m.key: _column_for(m, header, path) for m in entries}
    patches: list[PatchEntry] = []
    seen: set[str] = set()
    for row in reader:
        patch_id = (row.get(PATCH_ID_COLUMN) or "").strip()
        _check_patch_id(patch_id, path, seen)
        paths = {}
        for key, column in columns.items():
            cell = (row.get(column) or "").strip()
            if cell:
                paths[key] = _safe_relpath(cell, patch_id=patch_id, source=path)
        patches.append(PatchEntry(patch_id, paths))
    return patches


def _check_patch_id(patch_id: str, source: Path, seen: set[str]) -> None:
    try:
        PatchId.parse(patch_id)
    except ValueError as error:
        raise DataError(str(error), patch_id=patch_id or "<empty>", path=source) from None
    if patch_id in seen:
        raise DataError("patch listed twice", patch_id=patch_id, path=source)
    seen.add(patch_id)


def write_split_csv(path: Path, patches: Iterable[PatchEntry], modalities: Iterable[str]) -> None:
    """Inverse of :func:`read_split_csv` (toy datasets, tests, folds built from a scan)."""
    keys = [m.key for m in resolve(modalities)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([PATCH_ID_COLUMN, *keys])
        for patch in patches:
            writer.writerow([patch.patch_id, *(str(patch.paths.get(k, "")) for k in keys)])


# ---------------------------------------------------------------------------------- folder scan


def _existing_rasters(root: Path, modality: Modality) -> set[PurePosixPath]:
    """Relative paths of every ``.tif`` under this modality's domain folders (one listing, no stats)."""
    found: set[PurePosixPath] = set()
    for folder in root.iterdir():
        match = _FOLDER.match(folder.name)
        if match is None or match["suffix"] != modality.folder_suffix or not folder.is_dir():
            continue
        found.update(PurePosixPath(p.relative_to(root).as_posix()) for p in folder.glob("*/*.tif"))
    return found


def _patch_id_from_relpath(relpath: PurePosixPath) -> str | None:
    """``{DOMAIN}_{SUFFIX}/{ROI}/{DOMAIN}_{SUFFIX}_{ROI}_{row}-{col}.tif`` -> patch id, or None."""
    folder, roi = relpath.parts[0], relpath.parts[1]
    prefix = f"{folder}_{roi}_"
    if not relpath.stem.startswith(prefix):
        return None
    patch_id = f"{_FOLDER.match(folder)['domain']}_{roi}_{relpath.stem[len(prefix) :]}"  # type: ignore[index]
    try:
        PatchId.parse(patch_id)
    except ValueError:
        return None
    return patch_id


def scan_patches(
    root: Path, modalities: Iterable[str], domains: Iterable[str] | None = None
) -> list[PatchEntry]:
    """Patches found in the folder tree (sorted by id), for when no split CSV exists.

    Patch ids come from modalities named after the patch's own domain; modalities with a
    substituted domain year (historical imagery, ``D006-195X``) cannot name the patch, so they are
    only attached to patches found through another modality.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset root is not a directory", path=root)
    entries = resolve(modalities)
    anchors = [m for m in entries if m.domain_year is None]
    if not anchors:
        raise ValueError(
            f"scanning needs a modality named after the patch domain, got only {[m.key for m in entries]}"
        )
    wanted = None if domains is None else set(domains)
    listed = {m.key: _existing_rasters(root, m) for m in entries}
    ids: set[str] = set()
    for modality in anchors:
        for relpath in listed[modality.key]:
            patch_id = _patch_id_from_relpath(relpath)
            if patch_id is None:
                log.warning("ignoring %s: file name does not follow the FLAIR-HUB pattern", relpath)
            elif wanted is None or PatchId.parse(patch_id).domain in wanted:
                ids.add(patch_id)
    patches = []
    for patch_id in sorted(ids):
        patch = PatchId.parse(patch_id)
        paths = {
            m.key: rel
            for m in entries
            if (rel := PurePosixPath(raster_relpath(m, patch).as_posix())) in listed[m.key]
        }
        patches.append(PatchEntry(patch_id, paths))
    log.info("scanned %s: %d patches", root, len(patches))
    return patches


def split_by_domain(
    patches: Iterable[PatchEntry], domain_splits: Mapping[str, str]
) -> dict[str, list[PatchEntry]]:
    """Group patches by the split of their domain (domain-wise folds); unlisted domains are dropped."""
    out: dict[str, list[PatchEntry]] = {split: [] for split in dict.fromkeys(domain_splits.values())}
    for patch in patches:
        split = domain_splits.get(PatchId.parse(patch.patch_id).domain)
        if split is not None:
            out[split].append(patch)
    return out
