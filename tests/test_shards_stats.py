"""Per-band statistics streamed from shards agree with numpy over the reader's arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from einops import rearrange
from fixtures_flairhub import write_flairhub_tree

from maestro.data.flairhub import FlairHubReader
from maestro.errors import DataError
from maestro.modalities import with_companions
from shards.stats import BandStats, compute_stats, write_stats
from shards.writer import BuildConfig, build

MODALITIES = ("spot", "dem", "s2", "s1_asc", "lc")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tree")
    ids = [f"D001-2021_RA-S1-01_{i}-0" for i in range(5)]
    write_flairhub_tree(root, with_companions(MODALITIES), {"train": ids[:3], "val": ids[3:]})
    out = root.parent / f"{root.name}-shards"
    for split in ("train", "val"):
        build(
            BuildConfig(root=root, out=out, split=split, modalities=MODALITIES, max_count=2, progress=False)
        )
    return root, out


def reference(root: Path, splits: list[str], modality: str) -> np.ndarray:
    """(bands, all pixels of all dates of all samples) in float64."""
    columns = []
    for split in splits:
        for sample in FlairHubReader(root, with_companions(MODALITIES), split=split):
            columns.append(rearrange(sample[modality].astype(np.float64), "... c h w -> c (... h w)"))
    return np.concatenate(columns, axis=1)


def test_stats_match_numpy(built: tuple[Path, Path]) -> None:
    root, out = built
    stats = compute_stats(out, ["train", "val"])
    assert stats["samples"] == 5
    assert set(stats["modalities"]) == {"spot", "dem", "s2", "s2_mask", "s1_asc"}  # labels left out
    for modality, entry in stats["modalities"].items():
        values = reference(root, ["train", "val"], modality)
        assert entry["count"] == [values.shape[1]] * values.shape[0]
        np.testing.assert_allclose(entry["mean"], values.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(entry["std"], values.std(axis=1), rtol=1e-9)
        np.testing.assert_array_equal(entry["min"], values.min(axis=1))
        np.testing.assert_array_equal(entry["max"], values.max(axis=1))
        assert entry["nonfinite"] == [0] * values.shape[0]


def test_train_only_and_parallel_agree(built: tuple[Path, Path]) -> None:
    _, out = built
    serial = compute_stats(out, ["train"], modalities=["s2"])
    parallel = compute_stats(out, ["train"], modalities=["s2"], workers=2)
    assert serial == parallel
    assert serial["samples"] == 3 and list(serial["modalities"]) == ["s2"]
    assert serial["modalities"]["s2"]["bands"][0] == "B2"


def test_written_next_to_manifest(built: tuple[Path, Path]) -> None:
    _, out = built
    path = write_stats(out, compute_stats(out, ["train"], modalities=["s1_asc"]))
    assert path == out / "stats.json"
    assert json.loads(path.read_text())["splits"] == ["train"]


def test_unknown_split_or_modality(built: tuple[Path, Path]) -> None:
    _, out = built
    with pytest.raises(DataError, match="no split 'test'"):
        compute_stats(out, ["test"])
    with pytest.raises(DataError, match="aerial"):
        compute_stats(out, ["train"], modalities=["aerial"])


def test_nan_is_ignored_and_counted() -> None:
    array = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)  # T=2, C=3
    array[0, 1, 0, 0] = np.nan
    array[1, 2] = np.nan  # a whole band of one date
    stats = BandStats.of_array(array).to_json(["a", "b", "c"])
    values = rearrange(array.astype(np.float64), "t c h w -> c (t h w)")
    assert stats["count"] == [8, 7, 4]
    assert stats["nonfinite"] == [0, 1, 4]
    np.testing.assert_allclose(stats["mean"], np.nanmean(values, axis=1))
    np.testing.assert_allclose(stats["std"], np.nanstd(values, axis=1))
    np.testing.assert_array_equal(stats["min"], np.nanmin(values, axis=1))


def test_merge_is_stable_for_large_offsets() -> None:
    """Elevations ~1e6 with unit spread: naive sum-of-squares would lose all precision."""
    rng = np.random.default_rng(0)
    chunks = [1e6 + rng.normal(size=(1, 1, 8, 8 * (i + 1))) for i in range(6)]
    total = BandStats.empty(1)
    for chunk in chunks:
        total.merge(BandStats.of_array(chunk))
    values = np.concatenate([c.reshape(-1) for c in chunks])
    out = total.to_json(["x"])
    np.testing.assert_allclose(out["std"][0], values.std(), rtol=1e-9)
    np.testing.assert_allclose(out["mean"][0], values.mean(), rtol=1e-15)


def test_empty_band_reports_none() -> None:
    array = np.full((1, 2, 2), np.nan, dtype=np.float32)
    stats = BandStats.empty(1)
    stats.merge(BandStats.of_array(array))
    assert stats.to_json(["x"])["mean"] == [None] and stats.to_json(["x"])["count"] == [0]
