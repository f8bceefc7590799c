"""Toy dataset: real FLAIR-HUB layout, registry-conform rasters, determinism, and learnable signal."""

from __future__ import annotations

import csv
import filecmp
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from maestro.data.flairhub import FlairHubReader
from maestro.data.layout import (
    CRS,
    PATCH_SIZE_M,
    SPLIT_NAME,
    PatchId,
    dates_table_path,
    raster_relpath,
    split_csv_path,
)
from maestro.data.metadata import read_dates_table
from maestro.data.toy import LPIS_HIERARCHY, SPLIT_DOMAINS, ToySummary, write_toy_dataset
from maestro.datasets import get_dataset
from maestro.dates import year_and_doy
from maestro.labels import LABEL_SETS
from maestro.modalities import MODALITIES as REGISTRY
from maestro.sample import DATES, Sample
from shards.cli import main as shards_main

MODALITIES = {key: REGISTRY[key] for key in get_dataset("flair-hub").modalities}
"""The FLAIR-HUB rows of the registry: what the toy simulates (FLAIR #2's own rows are not)."""
NUM_PATCHES = 32
SPLITS = tuple(SPLIT_DOMAINS)
LPIS = LABEL_SETS["lpis"]
MIXED_L1 = LPIS.level(1).names.index("mixed crops")
BACKGROUND_L1 = LPIS.level(1).names.index("background")
MONTHS = np.arange(15, 365, 30)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToySummary:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "flairhub", num_patches=NUM_PATCHES, seed=0)


@pytest.fixture(scope="module")
def samples(toy: ToySummary) -> dict[str, list[Sample]]:
    """Every patch read back through the real reader (the round trip the rest of the suite uses)."""
    return {split: list(FlairHubReader(toy.root, MODALITIES, split=split)) for split in SPLITS}


def _csv_rows(root: Path, split: str) -> list[dict[str, str]]:
    with split_csv_path(root, SPLIT_NAME, split).open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------ layout


def test_layout_follows_flairhub(toy: ToySummary) -> None:
    assert sum(toy.patches.values()) == NUM_PATCHES
    for split in SPLITS:
        rows = _csv_rows(toy.root, split)
        assert len(rows) == toy.patches[split]
        assert list(rows[0]) == ["patch_id", *MODALITIES]
        for row in rows:
            patch = PatchId.parse(row["patch_id"])
            for key, modality in MODALITIES.items():
                assert row[key] == raster_relpath(modality, patch).as_posix()
                assert (toy.root / row[key]).is_file()
    for table in {m.dates_table for m in MODALITIES.values() if m.dates_table}:
        assert len(read_dates_table(dates_table_path(toy.root, table))) == NUM_PATCHES
    assert any(p.name.startswith("D001-195X_AERIAL-RLT_PAN") for p in toy.root.iterdir())
    assert "MiB written" in str(toy)


def test_splits_use_disjoint_domains(toy: ToySummary) -> None:
    domains = {
        split: {PatchId.parse(r["patch_id"]).domain for r in _csv_rows(toy.root, split)} for split in SPLITS
    }
    assert domains["train"] == set(SPLIT_DOMAINS["train"])
    assert not domains["train"] & domains["val"] and not domains["train"] & domains["test"]
    assert not domains["val"] & domains["test"]
    rois = {PatchId.parse(r["patch_id"]).roi for r in _csv_rows(toy.root, "train")}
    assert len(rois) > 1


def test_rasters_match_registry_and_share_footprint(toy: ToySummary) -> None:
    for row in _csv_rows(toy.root, "val") + _csv_rows(toy.root, "test"):
        bounds = []
        for key, modality in MODALITIES.items():
            with rasterio.open(toy.root / row[key]) as src:
                assert src.dtypes == (modality.dtype,) * src.count, key
                assert (src.height, src.width) == (modality.size_px, modality.size_px), key
                assert src.count % modality.num_bands == 0 and (
                    modality.temporal or src.count == modality.num_bands
                )
                assert src.crs.to_epsg() == int(CRS.split(":")[1])
                assert src.res == pytest.approx((modality.pixel_size_m,) * 2, rel=1e-6), key
                assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
                assert "PREDICTOR" in src.tags(ns="IMAGE_STRUCTURE")
                bounds.append(tuple(src.bounds))
        np.testing.assert_allclose(bounds, [bounds[0]] * len(bounds), atol=1e-6)
        left, bottom, right, top = bounds[0]
        assert right - left == pytest.approx(PATCH_SIZE_M) and top - bottom == pytest.approx(PATCH_SIZE_M)


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        write_toy_dataset(tmp_path, num_patches=3)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="at least 3 patches"):
        write_toy_dataset(tmp_path / "new", num_patches=2)


# ------------------------------------------------------------------------------- determinism


def _tifs(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.tif"))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()  # an existing empty directory is accepted
    assert shards_main(["toy", "--out", str(tmp_path / "a"), "--patches", "3", "--seed", "7"]) == 0
    write_toy_dataset(tmp_path / "b", num_patches=3, seed=7)
    write_toy_dataset(tmp_path / "c", num_patches=3, seed=8)
    files = _tifs(tmp_path / "a")
    assert files == _tifs(tmp_path / "b") == _tifs(tmp_path / "c") and len(files) == 3 * len(MODALITIES)
    assert all(filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False) for f in files)
    assert not any(filecmp.cmp(tmp_path / "a" / f, tmp_path / "c" / f, shallow=False) for f in files)
    for split in SPLITS:
        assert _csv_rows(tmp_path / "a", split) == _csv_rows(tmp_path / "b", split)
    for table in ("SENTINEL2", "SENTINEL1-ASC", "AERIAL"):
        a, b = (read_dates_table(dates_table_path(tmp_path / x, table)) for x in "ab")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------- content


def test_reader_round_trip_dates(samples: dict[str, list[Sample]], toy: ToySummary) -> None:
    all_samples = [s for split in SPLITS for s in samples[split]]
    assert len(all_samples) == NUM_PATCHES
    s2_lengths = []
    for sample in all_samples:
        year = int(sample["meta"]["domain"].split("-")[1])
        for key, dates in sample[DATES].items():
            assert np.all(np.diff(dates) > 0), key
            assert np.all(dates // 10000 == year), key
        assert len(sample[DATES]["aerial"]) == len(sample[DATES]["spot"]) == 1
        assert sample["s2"].shape[0] == sample["s2_mask"].shape[0] == len(sample[DATES]["s2"])
        assert 8 <= sample["s2"].shape[0] <= 40
        assert all(3 <= sample[k].shape[0] <= 12 for k in ("s1_asc", "s1_des"))
        s2_lengths.append(sample["s2"].shape[0])
    assert min(s2_lengths) < MODALITIES["s2"].num_dates < max(s2_lengths)
    assert toy.short_s2 == sum(n < MODALITIES["s2"].num_dates for n in s2_lengths)


def test_value_ranges_and_cross_sensor_consistency(samples: dict[str, list[Sample]]) -> None:
    for sample in samples["train"]:
        for key in ("s1_asc", "s1_des"):
            assert sample[key].dtype == np.float32 and sample[key].min() >= 1e-4 and sample[key].max() <= 2.0
        assert sample["s2_mask"].max() <= 100 and sample["lc"].max() <= 18
        aerial = sample["aerial"].astype(np.float64)
        spot_r = sample["spot"][0].astype(np.float64)
        aerial_r = aerial[0].reshape(64, 8, 64, 8).mean(axis=(1, 3))
        assert np.corrcoef(spot_r.ravel(), aerial_r.ravel())[0, 1] > 0.7
        pan = aerial[:3].mean(axis=0).reshape(256, 2, 256, 2).mean(axis=(1, 3))
        assert np.corrcoef(pan.ravel(), sample["hist"][0].ravel().astype(np.float64))[0, 1] > 0.5
        dsm, dtm = sample["dem"]
        assert np.all(dsm >= dtm)


def test_clouds_are_flagged_and_bright(samples: dict[str, list[Sample]], toy: ToySummary) -> None:
    cloudy, clear = [], []
    snowy_dates = 0
    for sample in samples["train"]:
        blue = sample["s2"][:, MODALITIES["s2"].bands.index("B2")].astype(np.float64)
        snow, cloud = (sample["s2_mask"][:, i] for i in range(2))
        cloudy.append(blue[cloud >= 80])
        clear.append(blue[(cloud == 0) & (snow == 0)])
        snowy_dates += int((snow.reshape(len(snow), -1).max(axis=1) > 0).sum())
    cloudy_blue, clear_blue = np.concatenate(cloudy), np.concatenate(clear)
    assert cloudy_blue.size > 0 and np.median(cloudy_blue) > 3 * np.median(clear_blue)
    assert 0.15 < toy.cloudy_fraction < 0.6
    total_dates = sum(s["s2"].shape[0] for s in samples["train"])
    assert snowy_dates < 0.1 * total_dates


def test_labels_consistent_and_realistic(samples: dict[str, list[Sample]]) -> None:
    levels = LPIS_HIERARCHY
    parent_2_to_1 = {int(l2): int(l1) for l1, l2, _ in levels}
    assert all(parent_2_to_1[int(l2)] == int(l1) for l1, l2, _ in levels)  # level 2 refines level 1
    assert len(levels) == LPIS.level(3).num_values
    lpis = np.stack([s["lpis"] for split in SPLITS for s in samples[split]])  # (N, 3, H, W)
    np.testing.assert_array_equal(np.moveaxis(lpis, 1, -1), levels[lpis[:, 2]])
    l1 = lpis[:, 0]
    background = float((l1 == BACKGROUND_L1).mean())
    assert 0.6 <= background <= 0.85
    assert (l1 == MIXED_L1).any()
    assert len(np.unique(l1[l1 < MIXED_L1])) >= 8
    lc = np.stack([s["lc"] for split in SPLITS for s in samples[split]])
    ignored = np.isin(lc, sorted(LABEL_SETS["lc"].level(1).ignored))
    assert 0 < ignored.mean() < 0.05
    assert len(np.unique(lc[~ignored])) >= 12


# ------------------------------------------------------------------------------------ signal


def _fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Linear discriminant analysis (shared covariance with shrinkage): a closed-form linear classifier."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, test = (train_x - mean) / std, (test_x - mean) / std
    classes = np.unique(train_y)
    centroids = np.stack([x[train_y == c].mean(0) for c in classes])
    residual = x - centroids[np.searchsorted(classes, train_y)]
    covariance = 0.8 * np.cov(residual, rowvar=False).reshape(x.shape[1], x.shape[1]) + 0.2 * np.eye(
        x.shape[1]
    )
    coef = np.linalg.solve(covariance, centroids.T)  # (features, classes)
    prior = np.log(np.bincount(np.searchsorted(classes, train_y)) / len(train_y))
    scores = test @ coef - 0.5 * (centroids * coef.T).sum(1) + prior
    return classes[scores.argmax(1)]


def _parcel_pixels(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per S2 pixel mostly (>= 70%) inside one crop parcel: S2 monthly profile, aerial stats, level-1 crop."""
    size, values = MODALITIES["s2"].size_px, LPIS.level(1).num_values
    block = (np.arange(512) * size) // 512
    pixel = (block[:, None] * size + block[None, :]).ravel()
    counts = np.bincount(pixel * values + sample["lpis"][0].ravel(), minlength=size * size * values)
    counts = counts.reshape(size * size, values)
    label, purity = counts.argmax(1), counts.max(1) / counts.sum(1)
    s2 = sample["s2"].astype(np.float32).reshape(len(sample["s2"]), 10, -1) / 1e4
    clean = (sample["s2_mask"].reshape(len(s2), 2, -1) == 0).all(axis=1)  # (T, pixels)
    _, doy = year_and_doy(sample[DATES]["s2"])
    aerial = sample["aerial"].astype(np.float64).reshape(4, -1) / 255
    area = np.bincount(pixel)
    mean = np.stack([np.bincount(pixel, weights=band) for band in aerial], axis=1) / area[:, None]
    square = np.stack([np.bincount(pixel, weights=band**2) for band in aerial], axis=1) / area[:, None]
    aerial_x = np.concatenate([mean, np.sqrt(np.maximum(square - mean**2, 0))], axis=1)
    keep = np.flatnonzero((purity >= 0.7) & (label < MIXED_L1) & (clean.sum(0) >= 2))
    s2_x = [
        np.concatenate(
            [np.interp(MONTHS, doy[clean[:, p]], s2[clean[:, p], b, p], period=365) for b in range(10)]
        )
        for p in keep
    ]
    return np.array(s2_x).reshape(-1, 10 * len(MONTHS)), aerial_x[keep], label[keep]


def _dataset(
    samples: list[Sample], features: Callable[[Sample], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    parts = [features(s) for s in samples]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


def _balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([(predicted[truth == c] == c).mean() for c in np.unique(truth)]))


def test_crops_need_the_time_series(samples: dict[str, list[Sample]]) -> None:
    """LPIS level 1 from the S2 temporal profile beats aerial appearance by far, across domains.

    Leave-one-domain-out (FLAIR-HUB's folds are domain-wise) rather than one train -> val/test
    pass: with a few dozen patches the val/test domains hold only a handful of parcels, and the
    comparison would measure which parcels happened to be drawn rather than the signal.
    """
    everything = [s for split in SPLITS for s in samples[split]]
    domains = sorted({s["meta"]["domain"] for s in everything})
    features = {
        d: _dataset([s for s in everything if s["meta"]["domain"] == d], _parcel_pixels) for d in domains
    }
    truth, from_s2, from_aerial = [], [], []
    for held_out in domains:
        train = [np.concatenate([features[d][i] for d in domains if d != held_out]) for i in range(3)]
        test_s2, test_aerial, test_y = features[held_out]
        known = np.isin(test_y, train[2])
        if not known.any():
            continue
        truth.append(test_y[known])
        from_s2.append(_fit_predict(train[0], train[2], test_s2[known]))
        from_aerial.append(_fit_predict(train[1], train[2], test_aerial[known]))
    y, s2, aerial = (np.concatenate(v) for v in (truth, from_s2, from_aerial))
    assert len(y) > 300
    acc_s2, acc_aerial = (s2 == y).mean(), (aerial == y).mean()
    bal_s2, bal_aerial = _balanced_accuracy(s2, y), _balanced_accuracy(aerial, y)
    assert acc_s2 > 0.5 and acc_s2 - acc_aerial > 0.2, (acc_s2, acc_aerial)
    assert bal_s2 - bal_aerial > 0.2, (bal_s2, bal_aerial)


def _land_cover_pixels(sample: Sample, stride: int = 16) -> tuple[np.ndarray, np.ndarray]:
    aerial = sample["aerial"][:, ::stride, ::stride].astype(np.float32) / 255
    dsm, dtm = sample["dem"][:, ::stride, ::stride]
    ndvi = (aerial[3] - aerial[0]) / (aerial[3] + aerial[0] + 1e-3)
    x = np.stack([*aerial, ndvi, np.log1p(np.maximum(dsm - dtm, 0))]).reshape(6, -1).T
    y = sample["lc"][0, ::stride, ::stride].ravel()
    trained = ~np.isin(y, sorted(LABEL_SETS["lc"].level(1).ignored))
    return x[trained], y[trained]


def test_land_cover_from_aerial_and_dem(samples: dict[str, list[Sample]]) -> None:
    train_x, train_y = _dataset(samples["train"], _land_cover_pixels)
    test_x, test_y = _dataset(samples["val"] + samples["test"], _land_cover_pixels)
    predicted = _fit_predict(train_x, train_y, test_x)
    accuracy = (predicted == test_y).mean()
    majority = np.bincount(test_y).max() / len(test_y)
    assert accuracy > majority + 0.25, (accuracy, majority)
    assert _balanced_accuracy(predicted, test_y) > 3 / len(np.unique(train_y))
