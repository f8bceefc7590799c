"""``shards toy --dataset custom``: a small bocage landscape in the custom dataset layout.

A taxonomy that is not FLAIR-HUB's, drawn on one scene and cut into 512 px patches (102.4 m at
0.2 m)::

    OUT/data.yaml              the data config (inputs aerial and dem, labels, CSV, nomenclature)
    OUT/nomenclature.yaml      other / hedgerow / isolated tree / forest, with a grouping of raw values
    OUT/patches.csv            patch_id,split,date
    OUT/aerial/<id>.tif        R, G, B, NIR uint8       OUT/dem/<id>.tif   DSM, DTM float32
    OUT/labels/<id>.tif        raw values: 0 other, 11 / 12 hedgerow (two survey codes), 20 isolated tree, 30 forest
    OUT/zone/                  the whole scene as a zone for ``predict`` (aerial.tif, aerial_dates.json,
                               dem.tif) and its reference classes (label.tif)

Fields separated by hedgerows (lines 3-5 m wide, 5-8 m tall) with isolated trees (2-5 m crowns,
9-13 m tall) and forest blobs (15-25 m). Classes differ in colour a little and in height and shape
a lot, so a model has to use the elevation or the context. Terrain is smooth; every patch shares
the scene's georeferencing (EPSG:2154), so the patches tile the zone exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.transform import Affine

from maestro.data.layout import CRS, TOY_MARKER
from maestro.data.toy.writing import check_inside, prepare_output
from maestro.datasets import register_toy
from maestro.modalities import MODALITIES

PATCH_PX = 512
PIXEL_M = MODALITIES["aerial"].pixel_size_m
ORIGIN = (380_000.0, 6_800_000.0)
"""Upper-left corner of the scene (Lambert-93, Brittany)."""
CLASSES = ("other", "hedgerow", "isolated tree", "forest")
COLOURS = ("#e0d9a6", "#1b7837", "#7fbc41", "#00441b")
RAW = {"other": (0,), "hedgerow": (11, 12), "isolated tree": (20,), "forest": (30,)}
_REFLECTANCE = {  # R, G, B, NIR mean per class
    "other": (150, 160, 105, 175),
    "hedgerow": (70, 100, 55, 195),
    "isolated tree": (75, 110, 60, 205),
    "forest": (40, 70, 45, 185),
}
_HEIGHT_M = {
    "other": (0.0, 0.5),
    "hedgerow": (5.0, 8.0),
    "isolated tree": (9.0, 13.0),
    "forest": (15.0, 25.0),
}


def _window(
    height: int, width: int, top: float, bottom: float, left: float, right: float
) -> tuple[slice, slice]:
    return (
        slice(max(0, int(top)), min(height, int(bottom) + 1)),
        slice(max(0, int(left)), min(width, int(right) + 1)),
    )


def _scene_classes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Class index per pixel: forest blobs, a jittered field grid of hedgerows, isolated trees.

    Each shape is drawn inside its bounding window only, so a scene of a few thousand pixels a
    side takes a fraction of a second."""
    classes = np.zeros((height, width), dtype=np.uint8)
    for _ in range(max(1, height * width // 900_000)):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(120, 260)
        lobes = int(rng.integers(3, 6))
        window = _window(height, width, cy - 1.25 * r, cy + 1.25 * r, cx - 1.25 * r, cx + 1.25 * r)
        ys, xs = np.ogrid[window]
        wobble = 1 + 0.25 * np.sin(np.arctan2(ys - cy, xs - cx) * lobes)
        classes[window][np.hypot(ys - cy, xs - cx) < r * wobble] = 3
    field = int(rng.integers(380, 600))
    for axis, size in ((0, height), (1, width)):
        length = width if axis == 0 else height
        along = np.arange(length)
        for line in np.arange(rng.integers(60, field), size, field):
            half = int(rng.integers(8, 13))
            centre = line + rng.integers(-30, 30) + 0.04 * (along - length / 2) * rng.uniform(-1, 1)
            gate = np.sin(along / rng.uniform(40, 90)) > 0.85
            low, high = max(0, int(centre.min()) - half), min(size, int(centre.max()) + half + 1)
            across = np.arange(low, high)[:, None]
            hedge = (np.abs(across - centre[None]) < half) & ~gate[None]  # (across, along)
            strip = classes[low:high] if axis == 0 else classes[:, low:high].T
            strip[hedge & (strip != 3)] = 1
    for _ in range(height * width // 40_000):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, 25)
        window = _window(height, width, cy - r, cy + r, cx - r, cx + r)
        ys, xs = np.ogrid[window]
        patch = classes[window]
        patch[(np.hypot(ys - cy, xs - cx) < r) & (patch == 0)] = 2
    return classes


def _scene(rng: np.random.Generator, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aerial uint8 (4, H, W), dem float32 (2, H, W) DSM / DTM, raw labels uint8 (1, H, W))."""
    height, width = classes.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    terrain = 60 + 8 * np.sin(rows / 900) + 6 * np.cos(cols / 700)
    aerial = np.empty((4, height, width), dtype=np.float32)
    surface = np.zeros((height, width), dtype=np.float32)
    raw = np.zeros((height, width), dtype=np.uint8)
    for index, name in enumerate(CLASSES):
        where = classes == index
        low, high = _HEIGHT_M[name]
        surface[where] = rng.uniform(low, high, size=int(where.sum()))
        for band, mean in enumerate(_REFLECTANCE[name]):
            aerial[band][where] = mean
        codes = RAW[name]
        raw[where] = rng.choice(codes, size=int(where.sum())) if len(codes) > 1 else codes[0]
    aerial += rng.normal(0, 12, size=aerial.shape).astype(np.float32)
    dsm = terrain + surface
    dem = np.stack([dsm, terrain]).astype(np.float32)
    return np.clip(np.rint(aerial), 0, 255).astype(np.uint8), dem, raw[None]


def _write(path: Path, array: np.ndarray, transform: Affine, descriptions: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "dtype": array.dtype.name,
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "crs": CRS,
        "transform": transform,
        "compress": "deflate",
        "predictor": 3 if array.dtype.kind == "f" else 2,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        dst.descriptions = descriptions


def _splits(count: int) -> list[str]:
    """About 60 / 20 / 20 % train / val / test, each at least one patch, spread over the scene."""
    test = max(1, round(count * 0.2))
    val = max(1, round(count * 0.2))
    labels = ["train"] * (count - test - val) + ["val"] * val + ["test"] * test
    order = np.random.default_rng(1).permutation(count)
    return [labels[int(i)] for i in order]


def _data_files(root: Path) -> None:
    nomenclature = {
        "classes": [
            {"value": value, "name": name, "colour": colour}
            for value, (name, colour) in enumerate(zip(CLASSES, COLOURS, strict=True))
        ],
        "grouping": {raw: CLASSES.index(name) for name, codes in RAW.items() for raw in codes},
    }
    config = {
        "name": "Toy bocage",
        "patches": "patches.csv",
        "nomenclature": "nomenclature.yaml",
        "labels": {"folder": "labels"},
        "inputs": {"aerial": {"folder": "aerial"}, "dem": {"folder": "dem"}},
    }
    for name, content in (("nomenclature.yaml", nomenclature), ("data.yaml", config)):
        text = yaml.safe_dump(content, sort_keys=False, default_flow_style=None)
        check_inside(root, Path(name)).write_text(text)


@register_toy("custom", patches=24, min_patches=3)
def write_custom_toy(out: Path, num_patches: int = 24, seed: int = 0) -> str:
    """The toy dataset and zone in a new or empty folder ``out``; returns a summary to log."""
    root = prepare_output(out)
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(num_patches * 1.5)))
    rows = int(np.ceil(num_patches / cols))
    classes = _scene_classes(rng, rows * PATCH_PX, cols * PATCH_PX)
    aerial, dem, raw = _scene(rng, classes)
    scene = Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1])
    zone = root / "zone"
    _write(check_inside(root, Path("zone/aerial.tif")), aerial, scene, MODALITIES["aerial"].bands)
    _write(check_inside(root, Path("zone/dem.tif")), dem, scene, MODALITIES["dem"].bands)
    _write(check_inside(root, Path("zone/label.tif")), raw, scene, ("CLASS",))
    date = f"2021{int(rng.integers(5, 9)):02d}{int(rng.integers(1, 28)):02d}"
    (zone / "aerial_dates.json").write_text(json.dumps([date]) + "\n")
    splits = _splits(num_patches)
    with check_inside(root, Path("patches.csv")).open("w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["patch_id", "split", "date"])
        for index in range(num_patches):
            row, col = divmod(index, cols)
            window = (
                slice(None),
                slice(row * PATCH_PX, (row + 1) * PATCH_PX),
                slice(col * PATCH_PX, (col + 1) * PATCH_PX),
            )
            transform = scene @ Affine.translation(col * PATCH_PX, row * PATCH_PX)
            patch_id = f"BOC_{index:04d}"
            _write(root / "aerial" / f"{patch_id}.tif", aerial[window], transform, MODALITIES["aerial"].bands)
            _write(root / "dem" / f"{patch_id}.tif", dem[window], transform, MODALITIES["dem"].bands)
            _write(root / "labels" / f"{patch_id}.tif", raw[window], transform, ("CLASS",))
            table.writerow([patch_id, splits[index], f"{date[:4]}-{date[4:6]}-{date[6:]}"])
    _data_files(root)
    marker = {
        "dataset": "toy",
        "generator": "shards toy --dataset custom",
        "seed": seed,
        "patches": num_patches,
    }
    (root / TOY_MARKER).write_text(json.dumps(marker) + "\n")
    counts = {name: splits.count(name) for name in ("train", "val", "test")}
    return (
        f"wrote a toy custom dataset to {root}: {num_patches} patches of 512 px ({counts}), classes "
        f"{', '.join(CLASSES)}, data config {root / 'data.yaml'}, zone {zone}"
    )
