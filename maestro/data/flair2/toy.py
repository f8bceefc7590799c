"""A tiny synthetic FLAIR #2 release in the exact on-disk layout of :mod:`maestro.data.flair2.layout`.

Real GeoTIFFs (rasterio), real ``.npy`` / ``.txt`` / ``.json`` files, deterministic by seed.
Labels are learnable from every input: each raw class has its own aerial colour, NIR and
elevation (a fixed table, noise on top), and each patch's footprint in its zone's Sentinel-2
super-area carries the spectrum of the patch's majority class, so both branches of a model can
tell classes apart. Some dates are cloudy or snowy over the whole super-area (high
probability in the masks, bright reflectance), so the cloud filter has something to drop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from maestro.data.flair2 import layout
from maestro.data.flair2.nomenclature import RAW_VALUES
from maestro.data.layout import TOY_MARKER
from maestro.datasets import register_toy

_TABLE_SEED = 20230524
"""Class appearance is fixed across seeds: the seed changes scenes, not what a class looks like."""
_BLOCK = 128
_S2_PATCH_PX = layout.AERIAL_SIZE_PX * layout.AERIAL_PIXEL_SIZE_M / layout.S2_PIXEL_SIZE_M  # 10.24
_SPACING = 12
"""S2 pixels between neighbouring patch centroids of one zone (footprints do not overlap)."""
_ORIGIN = (650_000.0, 6_860_000.0)
_CAMERAS = ("UCE-M3-f120", "CAMERA#030")


def _class_tables() -> tuple[np.ndarray, np.ndarray]:
    """(20, 5) uint8 aerial R,G,B,NIR,elevation and (20, 10) S2 reflectance per raw value (row 0 unused)."""
    rng = np.random.default_rng(_TABLE_SEED)
    aerial = np.zeros((20, 5), dtype=np.float64)
    aerial[1:] = rng.permutation(np.linspace(25, 230, 19))[:, None] * np.ones(5)
    aerial[1:, :4] += rng.uniform(-20, 20, size=(19, 4))
    aerial[1:, 4] = rng.permutation(np.linspace(5, 200, 19))
    s2 = np.zeros((20, 10), dtype=np.float64)
    s2[1:] = rng.uniform(300, 5000, size=(19, 10))
    return np.clip(aerial, 0, 255), s2


@dataclass
class Flair2Toy:
    """What was written: patch ids per release split and, per patch, its domain, zone and centroid."""

    root: Path
    train_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    patches: dict[str, dict[str, object]] = field(default_factory=dict)
    dates: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def write_flair2_toy(
    root: Path,
    num_patches: int = 8,
    seed: int = 0,
    train_domains: tuple[str, ...] = ("D004_2021", "D013_2020", "D033_2019"),
    test_domains: tuple[str, ...] = ("D064_2021",),
    num_dates: int = 8,
) -> Flair2Toy:
    """Write ``num_patches`` patches spread over the domains (one zone each) under ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    aerial_table, s2_table = _class_tables()
    domains = [(d, "train") for d in train_domains] + [(d, "test") for d in test_domains]
    per_domain: dict[str, list[str]] = {d: [] for d, _ in domains}
    for index in range(num_patches):
        per_domain[domains[index % len(domains)][0]].append(f"{index + 1:06d}")
    toy = Flair2Toy(root)
    centroids: dict[str, list[int]] = {}
    metadata: dict[str, dict[str, object]] = {}
    for number, (domain, split) in enumerate(domains):
        ids = per_domain[domain]
        if not ids:
            continue
        zone = f"Z{number + 1}_UA"
        year = int(domain.split("_")[1])
        folders = layout.SPLIT_FOLDERS[split]
        aerial_root, labels_root, sen_root = (
            root / folders.aerial[0],
            root / folders.labels[0],
            root / folders.sen[0],
        )
        height, width = 48, 48 + _SPACING * (len(ids) - 1)
        days = _dates(rng, year, num_dates)
        covered = _cover(rng, num_dates)
        data = rng.normal(800, 60, size=(num_dates, 10, height, width))
        masks = np.zeros((num_dates, 2, height, width), dtype=np.uint8)
        x0, y0 = _ORIGIN[0] + number * 5000.0, _ORIGIN[1] - number * 5000.0
        for k, patch_id in enumerate(ids):
            row, col = 24, 24 + _SPACING * k
            raw = _label_map(rng)
            majority = int(np.bincount(raw.ravel(), minlength=20).argmax())
            r0, c0 = row - 5, col - 5  # the patch covers ~10.24 S2 px centred on the centroid
            data[:, :, r0 : r0 + 10, c0 : c0 + 10] = s2_table[majority][None, :, None, None] + rng.normal(
                0, 60, size=(num_dates, 10, 10, 10)
            )
            centre_x, centre_y = x0 + col * layout.S2_PIXEL_SIZE_M, y0 - row * layout.S2_PIXEL_SIZE_M
            half = layout.AERIAL_SIZE_PX * layout.AERIAL_PIXEL_SIZE_M / 2
            size = layout.AERIAL_PIXEL_SIZE_M
            transform = Affine(size, 0.0, centre_x - half, 0.0, -size, centre_y + half)
            image = aerial_table[raw].transpose(2, 0, 1) + rng.normal(0, 8, size=(5, *raw.shape))
            _write_tif(
                layout.image_path(aerial_root, domain, zone, patch_id), np.clip(image, 0, 255), transform
            )
            _write_tif(layout.mask_path(labels_root, domain, zone, patch_id), raw[None], transform)
            centroids[layout.centroid_key(patch_id)] = [row, col]
            flight = days[int(rng.integers(len(days)))]
            metadata[layout.metadata_key(patch_id)] = {
                "domain": domain,
                "zone": zone,
                "date": f"{flight // 10000:04d}-{flight // 100 % 100:02d}-{flight % 100:02d}",
                "time": f"{int(rng.integers(9, 16)):02d}h{int(rng.integers(0, 60)):02d}",
                "camera": _CAMERAS[int(rng.integers(len(_CAMERAS)))],
                "patch_centroid_x": round(centre_x, 2),
                "patch_centroid_y": round(centre_y, 2),
                "patch_centroid_z": round(float(rng.uniform(0, 900)), 2),
            }
            (toy.train_ids if split == "train" else toy.test_ids).append(patch_id)
            toy.patches[patch_id] = {"split": split, "domain": domain, "zone": zone, "centroid": (row, col)}
        for t, kind in enumerate(covered):
            if kind:
                band = layout.S2_MASK_BANDS.index(kind)
                masks[t, band] = rng.integers(70, 101, size=(height, width))
                data[t] = 6000 + rng.normal(0, 100, size=(10, height, width))
            masks[t, 1] = np.maximum(masks[t, 1], rng.integers(0, 20, size=(height, width)))
        files = layout.sen_files(sen_root, domain, zone)
        files["data"].parent.mkdir(parents=True, exist_ok=True)
        np.save(files["data"], np.clip(data, 0, 65535).astype(np.uint16))
        np.save(files["masks"], masks)
        names = [layout.product_name("AB"[t % 2], day) for t, day in enumerate(days)]
        files["products"].write_text("\n".join(names) + "\n")
        toy.dates[(domain, zone)] = days
    (root / layout.CENTROIDS_FILES[0]).write_text(json.dumps(centroids, indent=1))
    (root / layout.METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return toy


@register_toy("flair2", patches=16, min_patches=4)
def write_toy_release(out: Path, num_patches: int = 16, seed: int = 0) -> str:
    """``shards toy --dataset flair2``: the toy release in a new or empty folder, with the marker
    that makes shards built from it (and scores tested on them) say they are simulated."""
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"toy dataset output {root} exists and is not an empty directory; choose a new path"
        )
    toy = write_flair2_toy(root, num_patches=num_patches, seed=seed)
    marker = {
        "dataset": "toy",
        "generator": "shards toy --dataset flair2",
        "seed": seed,
        "patches": num_patches,
    }
    (root / TOY_MARKER).write_text(json.dumps(marker) + "\n")
    return (
        f"wrote a toy FLAIR #2 release to {root}: {len(toy.train_ids)} train patches (val: held-out train "
        f"domains) and {len(toy.test_ids)} test patches, seed {seed}"
    )


def _dates(rng: np.random.Generator, year: int, count: int) -> list[int]:
    """``count`` sorted distinct days of ``year`` (two per month at most, so monthly means merge some)."""
    doys = np.sort(rng.choice(np.arange(1, 360, 14), size=count, replace=False))
    base = np.datetime64(f"{year}-01-01")
    return [int(str(base + np.timedelta64(int(d) - 1, "D")).replace("-", "")) for d in doys]


def _cover(rng: np.random.Generator, count: int) -> list[str | None]:
    """Per date: ``None`` (clear), ``'cloud'`` or ``'snow'``; about a quarter are covered, never all."""
    kinds: list[str | None] = [None] * count
    for t in rng.choice(count, size=max(1, count // 4), replace=False):
        kinds[int(t)] = "cloud" if rng.random() < 0.7 else "snow"
    return kinds


def _label_map(rng: np.random.Generator) -> np.ndarray:
    """512 x 512 raw values in 128 px blocks; mostly the 12 kept classes, a few grouped into 'other'."""
    blocks = layout.AERIAL_SIZE_PX // _BLOCK
    values = np.array(RAW_VALUES)
    weights = np.where(values <= 12, 1.0, 0.25)
    grid = rng.choice(values, size=(blocks, blocks), p=weights / weights.sum()).astype(np.uint8)
    return np.kron(grid, np.ones((_BLOCK, _BLOCK), dtype=np.uint8))


def _write_tif(path: Path, array: np.ndarray, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "crs": layout.AERIAL_CRS,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.rint(array).astype(np.uint8))
