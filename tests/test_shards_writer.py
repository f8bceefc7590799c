"""Shard building: exact round trip, determinism, resume after an interrupted build, bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_flairhub import FlairHubTree, random_raster, write_flairhub_tree

import shards.writer as writer
from maestro.data.flairhub import FlairHubReader
from maestro.errors import ConfigError, DataError
from maestro.modalities import get_modality, with_companions
from shards.format import array_member, decode_sample, encode_sample, validate_key
from shards.loader import make_loader
from shards.manifest import read_manifest
from shards.verify import verify
from shards.writer import BuildConfig, build, parse_size

FULL = ("aerial", "dem", "s2", "s1_asc", "s1_des", "lc", "lpis")
LIGHT = ("spot", "s2", "s1_asc", "lc")


def patch_ids(n: int, domain: str = "D001-2021") -> list[str]:
    return [f"{domain}_RA-S1-{i // 4:02d}_{i % 4}-0" for i in range(n)]


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory: pytest.TempPathFactory) -> FlairHubTree:
    root = tmp_path_factory.mktemp("full")
    return write_flairhub_tree(root, with_companions(FULL), {"train": patch_ids(5)})


@pytest.fixture
def light_tree(tmp_path: Path) -> FlairHubTree:
    return write_flairhub_tree(
        tmp_path / "tree", with_companions(LIGHT),
        {"train": patch_ids(7), "val": patch_ids(3, "D009-2022")},
    )


def light_config(tree: FlairHubTree, out: Path, **kw: object) -> BuildConfig:
    options = {"modalities": LIGHT, "max_count": 2, "progress": False, **kw}
    return BuildConfig(root=tree.root, out=out, **options)  # type: ignore[arg-type]


def _plain(value: object) -> object:
    """Reader metadata with tuples as lists, the way JSON gives it back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def test_build_verify_stream_round_trip_is_bit_exact(full_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = build(BuildConfig(root=full_tree.root, out=out, modalities=FULL, max_count=2, progress=False))
    assert result.written == 3 and result.entry.num_samples == 5
    assert verify(out).ok
    reader = FlairHubReader(full_tree.root, with_companions(FULL))
    streamed = list(make_loader(out, preprocess=None, mode="eval", batch_size=None, num_workers=0))
    assert sorted(s["meta"]["patch_id"] for s in streamed) == sorted(reader.patch_ids)
    for sample in streamed:
        expected = reader.read(sample["meta"]["patch_id"])
        assert set(sample) == set(expected)
        for key in with_companions(FULL):
            assert sample[key].dtype == expected[key].dtype and sample[key].shape == expected[key].shape
            assert sample[key].tobytes() == expected[key].tobytes(), key
        assert sample["dates"].keys() == expected["dates"].keys()
        for key, dates in expected["dates"].items():
            assert sample["dates"][key].dtype == np.int32
            np.testing.assert_array_equal(sample["dates"][key], dates)
        assert sample["meta"] == _plain(expected["meta"])


def test_members_and_manifest(full_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    build(BuildConfig(root=full_tree.root, out=out, modalities=FULL, max_count=10, progress=False))
    manifest = read_manifest(out)
    entry = manifest.split("train")
    assert entry.modalities == with_companions(FULL)
    assert [s.name for s in entry.shards] == ["train-000000.tar"]
    with tarfile.open(out / "train-000000.tar") as tar:
        names = tar.getnames()
    key = names[0].split(".", 1)[0]
    suffixes = sorted(n.split(".", 1)[1] for n in names if n.startswith(key + "."))
    assert suffixes == sorted(["meta.json", *(array_member(m) for m in with_companions(FULL))])
    assert "lc.npy.gz" in suffixes and "aerial.npy" in suffixes
    data = json.loads((out / "manifest.json").read_text())
    assert data["format_version"] == 1
    assert data["splits"]["train"]["totals"] == {"shards": 1, "samples": 5, "bytes": entry.num_bytes, "skipped": 0}


def test_parallel_build_is_byte_identical_to_serial(light_tree: FlairHubTree, tmp_path: Path) -> None:
    serial = build(light_config(light_tree, tmp_path / "a", workers=1)).entry
    parallel = build(light_config(light_tree, tmp_path / "b", workers=2)).entry
    assert len(serial.shards) == 4
    assert [(s.name, s.count, s.sha256) for s in serial.shards] == [(s.name, s.count, s.sha256) for s in parallel.shards]


def test_splits_share_one_directory_and_manifest(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    build(light_config(light_tree, out, split="train"))
    build(light_config(light_tree, out, split="val"))
    manifest = read_manifest(out)
    assert sorted(manifest.splits) == ["train", "val"]
    assert manifest.split("val").num_samples == 3 and manifest.split("train").num_samples == 7
    assert verify(out).ok


def test_resume_after_interrupted_build(light_tree: FlairHubTree, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "shards"
    real = writer._encoded
    calls = {"n": 0}

    def crash_on_fifth(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th written sample: shards 0 and 1 are done, shard 2 is half written
            raise KeyboardInterrupt("simulated kill")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "_encoded", crash_on_fifth)
    monkeypatch.setattr(writer, "PROBE_SAMPLES", 0)
    with pytest.raises(KeyboardInterrupt):
        build(light_config(light_tree, out))
    assert (out / "train-000002.tar.partial").exists()
    assert not (out / "manifest.json").exists()
    finished = {n: (out / n).stat() for n in ("train-000000.tar", "train-000001.tar")}

    monkeypatch.setattr(writer, "_encoded", real)
    result = build(light_config(light_tree, out))
    assert (result.reused, result.written) == (2, 2)
    for name, before in finished.items():
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert not list(out.glob("*.partial"))
    assert result.entry.num_samples == 7
    assert verify(out).ok


def test_resume_rewrites_a_damaged_finished_shard(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    first = build(light_config(light_tree, out)).entry
    damaged = out / "train-000001.tar"
    data = bytearray(damaged.read_bytes())
    data[700] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = build(light_config(light_tree, out))
    assert (result.reused, result.written) == (3, 1)
    assert [s.sha256 for s in result.entry.shards] == [s.sha256 for s in first.shards]


def test_changed_parameters_are_refused(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    build(light_config(light_tree, out))
    with pytest.raises(ConfigError, match="max_count"):
        build(light_config(light_tree, out, max_count=3))


def test_bad_patch_stops_the_build_with_the_readers_error(light_tree: FlairHubTree, tmp_path: Path) -> None:
    bad = light_tree.splits["train"][3].patch_id
    light_tree.write_raster(bad, "spot", random_raster(get_modality("spot"), np.random.default_rng(0))[:3])
    with pytest.raises(DataError, match=bad) as info:
        build(light_config(light_tree, tmp_path / "shards"))
    assert "spot" in str(info.value) and "bands" in str(info.value)


def test_skip_bad_counts_and_lists_skipped_patches(light_tree: FlairHubTree, tmp_path: Path) -> None:
    bad = light_tree.splits["train"][3].patch_id
    light_tree.write_raster(bad, "spot", random_raster(get_modality("spot"), np.random.default_rng(0))[:3])
    out = tmp_path / "shards"
    entry = build(light_config(light_tree, out, skip_bad=True, workers=2)).entry
    assert entry.num_samples == 6
    assert [s.patch_id for s in entry.skipped] == [bad]
    assert "spot" in entry.skipped[0].error
    data = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert data["totals"]["skipped"] == 1 and data["skipped"][0]["patch_id"] == bad
    assert verify(out).ok


def test_patch_missing_a_requested_modality_is_an_error(tmp_path: Path) -> None:
    ids = patch_ids(3)
    tree = write_flairhub_tree(tmp_path / "tree", with_companions(LIGHT), {"train": ids}, missing={ids[1]: {"spot"}})
    with pytest.raises(DataError, match=f"patch {ids[1]}.*spot"):
        build(light_config(tree, tmp_path / "shards"))


def test_max_size_turns_into_samples_per_shard(light_tree: FlairHubTree, tmp_path: Path) -> None:
    config = light_config(light_tree, tmp_path / "shards", max_count=100, max_size=parse_size("1MB"))
    entry = build(config).entry
    per_sample = entry.num_bytes / entry.num_samples
    assert len(entry.shards) > 1
    assert all(s.bytes <= 1e6 + 2 * per_sample for s in entry.shards)


def test_parse_size() -> None:
    assert parse_size("1GB") == 10**9
    assert parse_size("500MiB") == 500 * 2**20
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size("12345") == 12345
    with pytest.raises(ConfigError):
        parse_size("lots")


@pytest.mark.parametrize("key", ["", "a.b", "../x", "a/b", "-x", "x" * 65, "é"])
def test_unsafe_sample_keys_are_refused(key: str) -> None:
    with pytest.raises(DataError, match="sample key"):
        validate_key(key)


def test_encode_refuses_missing_modality_and_decode_names_missing_member(full_tree: FlairHubTree) -> None:
    reader = FlairHubReader(full_tree.root, ["s2", "s2_mask", "lc"])
    sample = reader[0]
    with pytest.raises(DataError, match="lacks modalities"):
        encode_sample(sample, ["s2", "s2_mask", "lc", "dem"])
    members = encode_sample(sample, ["s2", "s2_mask", "lc"])
    del members["lc.npy.gz"]
    with pytest.raises(DataError, match=r"shard x, sample .*missing members \['lc.npy.gz'\]"):
        decode_sample(members, where=f"shard x, sample {members['__key__']}")
