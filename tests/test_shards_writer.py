"""Shard building: exact round trip, determinism, resume after an interrupted build, bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_flairhub import FlairHubTree, random_dates, random_raster, write_flairhub_tree

import shards.plan as plan
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
        tmp_path / "tree",
        with_companions(LIGHT),
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
    assert data["splits"]["train"]["totals"] == {
        "shards": 1,
        "samples": 5,
        "bytes": entry.num_bytes,
        "skipped": 0,
    }


def test_parallel_build_is_byte_identical_to_serial(light_tree: FlairHubTree, tmp_path: Path) -> None:
    serial = build(light_config(light_tree, tmp_path / "a", workers=1)).entry
    parallel = build(light_config(light_tree, tmp_path / "b", workers=2)).entry
    assert len(serial.shards) == 4
    assert [(s.name, s.count, s.sha256) for s in serial.shards] == [
        (s.name, s.count, s.sha256) for s in parallel.shards
    ]


def test_splits_share_one_directory_and_manifest(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    build(light_config(light_tree, out, split="train"))
    build(light_config(light_tree, out, split="val"))
    manifest = read_manifest(out)
    assert sorted(manifest.splits) == ["train", "val"]
    assert manifest.split("val").num_samples == 3 and manifest.split("train").num_samples == 7
    assert verify(out).ok


def test_resume_after_interrupted_build(
    light_tree: FlairHubTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shards"
    real = writer.encoded
    calls = {"n": 0}

    def crash_on_fifth(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th written sample: shards 0 and 1 are done, shard 2 is half written
            raise KeyboardInterrupt("simulated kill")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "encoded", crash_on_fifth)
    monkeypatch.setattr(plan, "PROBE_SAMPLES", 0)
    with pytest.raises(KeyboardInterrupt):
        build(light_config(light_tree, out))
    assert not (out / "train-000002.tar.partial").exists()  # the interrupted build removed its partial
    assert not (out / "manifest.json").exists()
    finished = {n: (out / n).stat() for n in ("train-000000.tar", "train-000001.tar")}
    (out / "train-000002.tar.partial").write_bytes(b"left by a SIGKILL")  # no cleanup ran

    monkeypatch.setattr(writer, "encoded", real)
    result = build(light_config(light_tree, out))
    assert (result.reused, result.written) == (2, 2)
    for name, before in finished.items():
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_size,
        )
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
    tree = write_flairhub_tree(
        tmp_path / "tree", with_companions(LIGHT), {"train": ids}, missing={ids[1]: {"spot"}}
    )
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


# ------------------------------------------------------------------------- stale shards, --force


def _shas(entry: object) -> list[str]:
    return [s.sha256 for s in entry.shards]  # type: ignore[attr-defined]


def _break_spot(tree: FlairHubTree, patch_id: str) -> np.ndarray:
    """Overwrite a patch's SPOT raster with a 3-band one; returns the good array to restore."""
    good = tree.arrays[patch_id]["spot"]
    tree.write_raster(patch_id, "spot", random_raster(get_modality("spot"), np.random.default_rng(0))[:3])
    return good


def test_fixed_source_tile_is_rebuilt_and_no_longer_skipped(light_tree: FlairHubTree, tmp_path: Path) -> None:
    bad = light_tree.splits["train"][3].patch_id
    good = _break_spot(light_tree, bad)
    out = tmp_path / "shards"
    first = build(light_config(light_tree, out, skip_bad=True))
    assert [s.patch_id for s in first.entry.skipped] == [bad]
    light_tree.write_raster(
        bad, "spot", good
    )  # the user fixes the corrupt tile and reruns, without --skip-bad
    second = build(light_config(light_tree, out))
    assert second.entry.skipped == [] and second.entry.num_samples == 7
    assert (second.reused, second.written, second.replaced) == (3, 1, 1)
    assert read_manifest(out).split("train").skipped == []
    clean = build(light_config(light_tree, tmp_path / "clean")).entry
    assert _shas(second.entry) == _shas(clean)  # byte-identical to a build from the fixed tree
    assert verify(out).ok


def test_edited_source_tile_rebuilds_only_its_shard(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    first = build(light_config(light_tree, out)).entry
    edited = light_tree.splits["train"][0].patch_id
    new = light_tree.arrays[edited]["spot"] // 2 + 1  # same size on disk, other values
    light_tree.write_raster(edited, "spot", new)
    second = build(light_config(light_tree, out))
    streamed = {
        s["meta"]["patch_id"]: s
        for s in make_loader(out, preprocess=None, mode="eval", batch_size=None, num_workers=0)
    }
    np.testing.assert_array_equal(streamed[edited]["spot"], new)
    changed = [a.name for a, b in zip(first.shards, second.entry.shards, strict=True) if a.sha256 != b.sha256]
    assert len(changed) == 1
    assert (second.reused, second.written, second.replaced) == (3, 1, 1)
    third = build(light_config(light_tree, out))
    assert (third.reused, third.written) == (4, 0)  # nothing changed since: everything kept


def test_fixed_dates_row_rebuilds_its_shard(light_tree: FlairHubTree, tmp_path: Path) -> None:
    patch = light_tree.splits["train"][5].patch_id
    real = light_tree.dates["SENTINEL2"][patch]
    out = tmp_path / "shards"
    build(light_config(light_tree, out))
    fixed = random_dates(np.random.default_rng(99), len(real))  # a corrected row, same number of dates
    light_tree.dates["SENTINEL2"][patch] = fixed
    light_tree.write_dates()
    result = build(light_config(light_tree, out))
    streamed = {
        s["meta"]["patch_id"]: s
        for s in make_loader(out, preprocess=None, mode="eval", batch_size=None, num_workers=0)
    }
    assert streamed[patch]["dates"]["s2"].tolist() == fixed
    assert (result.reused, result.replaced) == (3, 1)


def test_still_bad_skipped_patch_stops_a_resume_without_skip_bad(
    light_tree: FlairHubTree, tmp_path: Path
) -> None:
    bad = light_tree.splits["train"][3].patch_id
    _break_spot(light_tree, bad)
    out = tmp_path / "shards"
    build(light_config(light_tree, out, skip_bad=True))
    kept = build(
        light_config(light_tree, out, skip_bad=True)
    )  # retried, still bad: shard kept, still skipped
    assert (kept.reused, kept.written) == (4, 0) and [s.patch_id for s in kept.entry.skipped] == [bad]
    with pytest.raises(DataError, match=f"{bad}.*spot"):
        build(light_config(light_tree, out))


def test_force_rewrites_every_shard_byte_identically(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    first = build(light_config(light_tree, out)).entry
    before = {p.name: p.stat().st_ino for p in out.glob("*.tar")}
    forced = build(light_config(light_tree, out, force=True))
    assert (forced.reused, forced.written, forced.replaced) == (0, 4, 4)
    assert _shas(forced.entry) == _shas(first)
    assert all(p.stat().st_ino != before[p.name] for p in out.glob("*.tar"))  # really rewritten


def test_manifest_records_a_sources_digest_per_shard(light_tree: FlairHubTree, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    build(light_config(light_tree, out))
    shards = json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert all(len(s["sources_sha256"]) == 64 for s in shards)
    done = json.loads((out / ".build" / "train" / "train-000000.tar.done.json").read_text())
    state = next(iter(done["sources"].values()))
    assert state["spot"][0].endswith(".tif") and isinstance(state["spot"][2], int)  # path, size, mtime_ns


# ------------------------------------------------------------------------- failures leave no debris


def test_malformed_dates_row_is_skipped_not_fatal(light_tree: FlairHubTree, tmp_path: Path) -> None:
    import sqlite3

    patch = light_tree.splits["train"][2].patch_id
    table = light_tree.table("s2")
    connection = sqlite3.connect(table)
    with connection:
        connection.execute(
            f'UPDATE "{table.stem}" SET acquisition_dates = ? WHERE patch_id = ?', ("{oops", patch)
        )
    connection.close()
    with pytest.raises(DataError, match=f"{patch}.*not valid JSON"):
        build(light_config(light_tree, tmp_path / "strict"))
    entry = build(light_config(light_tree, tmp_path / "shards", skip_bad=True)).entry
    assert entry.num_samples == 6 and [s.patch_id for s in entry.skipped] == [patch]
    assert "not valid JSON" in entry.skipped[0].error


def test_build_failing_on_its_first_patch_leaves_no_directory(
    light_tree: FlairHubTree, tmp_path: Path
) -> None:
    ids = light_tree.splits["train"]
    for patch in ids:
        _break_spot(light_tree, patch.patch_id)
    out = tmp_path / "new" / "shards"
    with pytest.raises(DataError):
        build(light_config(light_tree, out))
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DataError):
        build(light_config(light_tree, existing))
    assert existing.is_dir() and list(existing.iterdir()) == []  # the user's directory stays, emptied of ours


def test_unknown_modality_lists_the_valid_keys(light_tree: FlairHubTree, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown modalities \['sentinel2'\]; valid keys are \['aerial'"):
        light_config(light_tree, tmp_path / "shards", modalities=("sentinel2",))
