"""``verify``: truncated shards, checksum mismatches, missing members, missing / extra files, NaN counts."""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from fixtures_flairhub import write_flairhub_tree

from maestro.errors import DataError
from maestro.modalities import with_companions
from shards.cli import main
from shards.manifest import SplitEntry, file_sha256, merge_split, read_manifest
from shards.verify import verify
from shards.writer import BuildConfig, build

MODALITIES = ("spot", "s2", "s1_asc", "lc")


@pytest.fixture(scope="module")
def tree_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    ids = [f"D001-2021_RA-S1-01_{i}-0" for i in range(6)]
    write_flairhub_tree(root, with_companions(MODALITIES), {"train": ids[:4], "val": ids[4:]})
    return root


@pytest.fixture
def out(tree_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    for split in ("train", "val"):
        build(
            BuildConfig(
                root=tree_root, out=out, split=split, modalities=MODALITIES, max_count=2, progress=False
            )
        )
    return out


def problems(report: object) -> str:
    return "\n".join(text for _, text in report.lines())  # type: ignore[attr-defined]


def test_clean_build_verifies(out: Path) -> None:
    report = verify(out)
    assert report.ok, problems(report)
    assert [s.name for s in report.shards] == ["train-000000.tar", "train-000001.tar", "val-000000.tar"]
    assert [s.samples for s in report.shards] == [2, 2, 2]
    assert verify(out, ["val"]).ok and len(verify(out, ["val"]).shards) == 1


def test_truncated_shard(out: Path) -> None:
    shard = out / "train-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    report = verify(out)
    assert not report.ok
    bad = {s.name: s for s in report.shards if not s.ok}
    assert list(bad) == ["train-000001.tar"]
    text = "\n".join(bad["train-000001.tar"].problems)
    assert "sha256 mismatch" in text and "size" in text
    assert "truncated or corrupt shard" in text
    assert "FAIL train-000001.tar" in problems(report)


def test_checksum_mismatch_with_same_size(out: Path) -> None:
    shard = out / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify(out)
    [bad] = [s for s in report.shards if not s.ok]
    assert bad.name == "train-000000.tar"
    assert any("sha256 mismatch" in p for p in bad.problems)
    assert not any("size" in p for p in bad.problems)


def test_missing_member(out: Path) -> None:
    """Rewrite a shard without one sample's label and fix up the manifest so only that shows."""
    shard = out / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    dropped = next(name for name, _ in members if name.endswith(".lc.npy.gz"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            if name != dropped:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    shard.write_bytes(buffer.getvalue())
    manifest = read_manifest(out)
    entry = manifest.split("train")
    record = entry.shards[0]
    entry.shards[0] = type(record)(record.name, record.count, shard.stat().st_size, file_sha256(shard))
    merge_split(out, SplitEntry(entry.split, entry.modalities, entry.shards, entry.skipped, entry.source))
    report = verify(out)
    [bad] = [s for s in report.shards if not s.ok]
    key = dropped.split(".", 1)[0]
    assert bad.problems == [f"sample {key}: missing members ['lc.npy.gz'], unexpected members []"]


def test_undecodable_member(out: Path) -> None:
    shard = out / "val-000000.tar"
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    broken = next(n for n in members if n.endswith(".s2.npy"))
    members[broken] = b"not an npy file"
    buffer = io.BytesIO()
    with wds.TarWriter(buffer, encoder=False) as writer:
        keys = dict.fromkeys(n.split(".", 1)[0] for n in members)
        for key in keys:
            writer.write(
                {"__key__": key, **{n.split(".", 1)[1]: v for n, v in members.items() if n.startswith(key)}}
            )
    shard.write_bytes(buffer.getvalue())
    report = verify(out)
    [bad] = [s for s in report.shards if not s.ok]
    assert any("member s2.npy does not decode" in p for p in bad.problems)


def test_missing_extra_and_partial_files(out: Path) -> None:
    (out / "val-000000.tar").unlink()
    shutil.copy(out / "train-000000.tar", out / "train-000007.tar")
    (out / "train-000002.tar.partial").write_bytes(b"half")
    report = verify(out)
    text = problems(report)
    assert "missing: listed in the manifest but not on disk" in text
    assert "train-000007.tar: shard on disk but not in the manifest" in text
    assert "train-000002.tar.partial: unfinished shard" in text


def test_no_manifest(tmp_path: Path) -> None:
    report = verify(tmp_path)
    assert not report.ok and "no manifest" in report.problems[0]


def test_checksums_only(out: Path) -> None:
    report = verify(out, decode=False)
    assert report.ok and all(s.samples == 0 for s in report.shards)


def test_parallel_verify_matches(out: Path) -> None:
    shard = out / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-5000])
    serial, parallel = verify(out), verify(out, workers=2)
    assert [(s.name, s.problems) for s in serial.shards] == [(s.name, s.problems) for s in parallel.shards]


def test_non_finite_values_are_counted_per_modality(
    tmp_path: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "non-finite values (NaN/inf): none" in problems(verify(out))
    ids = [f"D001-2021_RA-S1-01_{i}-0" for i in range(3)]
    tree = write_flairhub_tree(tmp_path / "tree", with_companions(MODALITIES), {"train": ids})
    border = tree.arrays[ids[1]]["s1_asc"].copy()
    border[:, 0, :3] = np.nan  # a NaN border on every date and band
    tree.write_raster(ids[1], "s1_asc", border)
    nan_out = tmp_path / "nan-shards"
    config = {"root": tree.root, "out": nan_out, "modalities": MODALITIES, "progress": False}
    with pytest.raises(DataError, match="non-finite"):
        build(BuildConfig(**config))  # type: ignore[arg-type]
    build(BuildConfig(**config, allow_nan=True))  # type: ignore[arg-type]
    count = int(np.isnan(border).sum())
    report = verify(nan_out)
    assert report.ok
    assert f"s1_asc {count} values in 1 samples" in problems(report)
    with caplog.at_level(logging.INFO):
        assert main(["verify", str(nan_out)]) == 0
        assert main(["stats", str(nan_out)]) == 0
    assert (
        f"non-finite values (NaN/inf, need nan_policy: fill to train): s1_asc {count} values" in caplog.text
    )
    assert f"non-finite values (NaN/inf, left out) {count} per band" in caplog.text
