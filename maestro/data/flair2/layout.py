"""FLAIR #2 challenge release on disk: folder tree, file names and raster facts.

The release (IGN, data paper arXiv 2305.14467; baseline code github.com/IGNF/FLAIR-2) is laid
out as one folder per source and split, each holding ``<domain>/<zone>/<kind>/`` sub-folders::

    {root}/
        flair_aerial_train/D004_2021/Z1_NN/img/IMG_000001.tif   # 5 bands R,G,B,NIR,elevation
        flair_labels_train/D004_2021/Z1_NN/msk/MSK_000001.tif   # 1 band, raw values 1..19
        flair_sen_train/D004_2021/Z1_NN/sen/SEN2_sp_D004_2021-Z1_NN_data.npy      # T,10,H,W uint16
        flair_sen_train/D004_2021/Z1_NN/sen/SEN2_sp_D004_2021-Z1_NN_masks.npy     # T,2,H,W snow,cloud
        flair_sen_train/D004_2021/Z1_NN/sen/SEN2_sp_D004_2021-Z1_NN_products.txt  # T product names
        flair_2_aerial_test/..., flair_2_sen_test/..., flair_2_labels_test/...
        flair-2_centroids_sp_to_patch.json   # "IMG_000001.tif" -> [row, col] in the super-area
        flair_aerial_metadata.json           # "IMG_000001" -> {date, time, camera, patch_centroid_x..z}

A domain is a French department and a year (``D004_2021``), a zone an area of it (``Z1_NN``);
one Sentinel-2 super-area (its data, masks and products files) covers every patch of a zone.

Sources of these facts: the train folder names, the ``img``/``msk``/``sen`` sub-folders, the
``SEN2_sp_<domain>-<zone>_*`` names and the centroid / metadata keys are those of the official
baseline code and its config (IGNF/FLAIR-2 ``flair-2-config.yml``, ``src/load_data.py``); the
test folder names ``flair_2_aerial_test`` / ``flair_2_sen_test`` are the config's. Not confirmed:
the test *labels* folder name (published after the challenge; the config leaves it empty), so
:data:`SPLIT_FOLDERS` also accepts ``flair_labels_test``; the root file names vary between
copies (the config writes ``flair_2_centroids_sp_to_patch.json``), so both spellings are tried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

AERIAL_BANDS: tuple[str, ...] = ("R", "G", "B", "NIR", "elevation")
"""Band order of ``IMG_*.tif``; the reader splits it into ``aerial`` (4 bands) and ``elevation``."""
AERIAL_SIZE_PX = 512
AERIAL_PIXEL_SIZE_M = 0.2
AERIAL_DTYPE = "uint8"
AERIAL_CRS = "EPSG:2154"
MASK_DTYPE = "uint8"

S2_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
"""The 10 bands of ``SEN2_*_data.npy``. Partly confirmed: the baseline notebook shows RGB as
indices (2, 1, 0), i.e. B2, B3, B4 first; the rest of the order is the usual 10 m + 20 m order,
not stated in the files we could read."""
S2_DTYPE = "uint16"
S2_PIXEL_SIZE_M = 10.0
S2_MASK_BANDS: tuple[str, ...] = ("snow", "cloud")
"""The 2 bands of ``SEN2_*_masks.npy``: snow and cloud probability, 0..100."""
S2_MASK_MAX = 100
DEFAULT_SUPER_PATCH = 40
"""Side in S2 pixels of the crop around the patch centroid (baseline default, 400 m)."""

CENTROIDS_FILES: tuple[str, ...] = (
    "flair-2_centroids_sp_to_patch.json",
    "flair_2_centroids_sp_to_patch.json",
    "centroids_sp_to_patch.json",
)
METADATA_FILE = "flair_aerial_metadata.json"

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFolders:
    """Top-level folder names of one release split; the first existing name of each tuple wins."""

    aerial: tuple[str, ...]
    labels: tuple[str, ...]
    sen: tuple[str, ...]


SPLIT_FOLDERS: dict[str, SplitFolders] = {
    "train": SplitFolders(("flair_aerial_train",), ("flair_labels_train",), ("flair_sen_train",)),
    "test": SplitFolders(
        ("flair_2_aerial_test", "flair_aerial_test"),
        ("flair_2_labels_test", "flair_labels_test"),
        ("flair_2_sen_test", "flair_sen_test"),
    ),
}
"""Release folders per on-disk split; ``val`` is carved out of ``train`` by domain (reader)."""

AERIAL_SUBDIR = "img"
LABELS_SUBDIR = "msk"
SEN_SUBDIR = "sen"

_IMG_RE = re.compile(r"^IMG_(?P<id>[0-9A-Za-z]+)\.tif$")
_DATE_RE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")


def image_name(patch_id: str) -> str:
    return f"IMG_{patch_id}.tif"


def mask_name(patch_id: str) -> str:
    return f"MSK_{patch_id}.tif"


def centroid_key(patch_id: str) -> str:
    """Key of a patch in the centroids JSON: the aerial file name."""
    return image_name(patch_id)


def metadata_key(patch_id: str) -> str:
    """Key of a patch in ``flair_aerial_metadata.json``: the aerial file name without suffix."""
    return f"IMG_{patch_id}"


def patch_id_of(image_file: str | Path) -> str | None:
    """``IMG_000123.tif`` -> ``000123``; ``None`` for any other name."""
    match = _IMG_RE.match(Path(image_file).name)
    return match.group("id") if match else None


def sen_stem(domain: str, zone: str) -> str:
    return f"SEN2_sp_{domain}-{zone}"


def sen_files(sen_root: Path, domain: str, zone: str) -> dict[str, Path]:
    """The super-area files of one zone: ``data``, ``masks``, ``products``."""
    folder = Path(sen_root) / domain / zone / SEN_SUBDIR
    stem = sen_stem(domain, zone)
    return {
        "data": folder / f"{stem}_data.npy",
        "masks": folder / f"{stem}_masks.npy",
        "products": folder / f"{stem}_products.txt",
    }


def image_path(aerial_root: Path, domain: str, zone: str, patch_id: str) -> Path:
    return Path(aerial_root) / domain / zone / AERIAL_SUBDIR / image_name(patch_id)


def mask_path(labels_root: Path, domain: str, zone: str, patch_id: str) -> Path:
    return Path(labels_root) / domain / zone / LABELS_SUBDIR / mask_name(patch_id)


def first_existing(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` that exists under ``root`` (else the first name, for error messages)."""
    for name in names:
        if (Path(root) / name).exists():
            return Path(root) / name
    return Path(root) / names[0]


def product_date(name: str) -> int | None:
    """YYYYMMDD of a Sentinel-2 product name: its first 8-digit run that is a valid calendar date.

    Release names are THEIA-style (``SENTINEL2A_20210415-105852-555_L2A_T31TCJ_C_V2-2``); the
    baseline code slices month and day at fixed offsets and takes the year from its config, which
    would silently give wrong years for other names, so the whole date is parsed here.
    """
    for match in _DATE_RE.finditer(name):
        year, month, day = (int(g) for g in match.groups())
        if 1 <= month <= 12 and 1 <= day <= 31 and 2000 <= year <= 2100:
            return year * 10000 + month * 100 + day
    return None


def product_name(satellite: str, date: int, tile: str = "T31TCJ") -> str:
    """A THEIA-style product name for ``date`` (YYYYMMDD); used by the toy generator."""
    return f"SENTINEL2{satellite}_{date:08d}-105852-555_L2A_{tile}_C_V2-2"
