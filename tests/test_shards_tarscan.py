"""shards.tarscan: member headers read straight from the mapped shard, as ``tarfile`` reads them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from shards.reading import iter_shard
from shards.tarscan import Scan, scan_ustar


def _tarfile_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]


def _scanned_members(path: Path) -> list[tuple[str, bytes]]:
    return [
        (f"{sample['__key__']}.{suffix}", bytes(data))
        for sample in iter_shard(str(path))
        for suffix, data in sample.items()
        if not suffix.startswith("__")
    ]


def test_shard_members_equal_tarfile_reads(toy_shards: Path) -> None:
    for shard in sorted(toy_shards.glob("*.tar")):
        assert sorted(_scanned_members(shard)) == sorted(_tarfile_members(shard))


def test_headers_left_to_tarfile(tmp_path: Path) -> None:
    """A PAX long name and a directory hand the rest of the archive over to tarfile."""
    path = tmp_path / "mixed.tar"
    members = {"a.meta.json": b"{}", f"{'b' * 120}.x.npy": bytes(70_000), "c.meta.json": b"[1]"}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("dir"), None)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    scanned = [(s["__key__"], s) for s in iter_shard(str(path))]
    assert [key for key, _ in scanned] == ["a", "b" * 120, "c"]
    assert bytes(scanned[1][1]["x.npy"]) == members[f"{'b' * 120}.x.npy"]


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_members_are_named_with_their_data_offsets():
    members = {"k.a.npy": b"x" * 700, "k.meta.json": b"{}"}
    data = _tar(members)
    scan = Scan()
    found = list(scan_ustar(data, scan))
    assert [(name, data[start : start + size]) for name, start, size in found] == list(members.items())
    assert scan.offset is None  # the whole archive was read here, nothing left to tarfile


def test_unselected_members_are_skipped():
    data = _tar({"k.a.npy": b"1", "k.b.npy": b"2"})
    assert [name for name, _, _ in scan_ustar(data, Scan(), lambda name: name.endswith("b.npy"))] == [
        "k.b.npy"
    ]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"", "empty file"),
        (lambda data: data[:300], "truncated header"),
        (lambda data: data[:100] + b"?" + data[101:], "bad checksum"),
        (lambda data: data[:700], "unexpected end of data"),
    ],
)
def test_a_damaged_archive_raises_as_tarfile_does(damage, message):
    data = damage(_tar({"k.a.npy": b"x" * 2000}))
    with pytest.raises(tarfile.ReadError, match=message):
        list(scan_ustar(data, Scan()))


def test_a_damaged_header_after_the_first_ends_the_archive():
    """tarfile's rule: only the first header must be valid; a bad one later is the end."""
    data = bytearray(_tar({"k.a.npy": b"x" * 10, "k.b.npy": b"y" * 10}))
    data[1024 + 5] ^= 0xFF  # the second member's header (after 512 header + 512 data)
    assert [name for name, _, _ in scan_ustar(bytes(data), Scan())] == ["k.a.npy"]
