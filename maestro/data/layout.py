"""FLAIR-HUB on-disk naming, shared by the reader, the toy writer and the shard builder.

``{DOMAIN}_{SENSOR}_{DATATYPE}/{ROI}/{DOMAIN}_{SENSOR}_{DATATYPE}_{ROI}_{row}-{col}.tif`` with
``patch_id = {DOMAIN}_{ROI}_{row}-{col}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from maestro.modalities import Modality

METADATA_DIR = "GLOBAL_ALL_MTD"
CRS = "EPSG:2154"
PATCH_SIZE_M = 102.4
SPLIT_NAME = "split_flairhub"
"""Folder of the official split CSVs under the root: readers default to it, the toy dataset writes it."""
PATCH_ID_COLUMN = "patch_id"
"""Column naming the patch in the split CSVs and in the dates GeoPackages."""

_PATCH_ID = re.compile(r"^(?P<domain>D\d{3}-[0-9X]{4})_(?P<roi>[^_/\\]+)_(?P<row>\d+)-(?P<col>\d+)$")


@dataclass(frozen=True)
class PatchId:
    domain: str
    """``D006-2020``: department and acquisition year of the aerial campaign."""
    roi: str
    row: int
    col: int

    @classmethod
    def parse(cls, patch_id: str) -> PatchId:
        match = _PATCH_ID.match(patch_id)
        if match is None:
            raise ValueError(
                f"malformed patch_id {patch_id!r}: expected '{{DOMAIN}}_{{ROI}}_{{row}}-{{col}}', "
                "e.g. 'D006-2020_FF-S1-14_3-7'"
            )
        return cls(match["domain"], match["roi"], int(match["row"]), int(match["col"]))

    def __str__(self) -> str:
        return f"{self.domain}_{self.roi}_{self.row}-{self.col}"

    def domain_for(self, modality: Modality) -> str:
        """Domain as spelled in this modality's folder (historical imagery uses ``D006-195X``)."""
        if modality.domain_year is None:
            return self.domain
        department = self.domain.split("-", 1)[0]
        return f"{department}-{modality.domain_year}"


def folder_name(modality: Modality, patch: PatchId) -> str:
    return f"{patch.domain_for(modality)}_{modality.folder_suffix}"


def raster_relpath(modality: Modality, patch: PatchId) -> Path:
    """Path of one patch's raster relative to the dataset root."""
    folder = folder_name(modality, patch)
    return Path(folder) / patch.roi / f"{folder}_{patch.roi}_{patch.row}-{patch.col}.tif"


def dates_table_path(root: Path, table: str) -> Path:
    return Path(root) / METADATA_DIR / f"GLOBAL_{table}_MTD_DATES.gpkg"


def split_csv_path(root: Path, split_name: str, split: str) -> Path:
    """``{root}/{split_name}/{split}.csv``, e.g. ``split_flairhub/train.csv``."""
    return Path(root) / split_name / f"{split}.csv"


TOY_MARKER = "TOY_DATASET.json"
"""Written at the root of a tree by the toy generator, so that shards (and the scores of models
tested on them) built from simulated data are never taken for FLAIR-HUB."""
