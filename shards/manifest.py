"""``manifest.json``: what a shard directory holds, per split, with checksums.

One output directory holds the shards of one dataset build, any number of splits side by side
(``train-000000.tar``, ``val-000000.tar``, ...), and one manifest whose ``splits`` section has an
entry per split. Builds of different splits into the same directory merge their entry under a
file lock, so they may run concurrently. Loaders, ``verify`` and ``stats`` resolve shards through
it; everything here is local-filesystem only (remote shards are addressed by URL instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maestro.errors import DataError
from shards.format import ENCODING, FORMAT_NAME, FORMAT_VERSION

MANIFEST_NAME = "manifest.json"
STATS_NAME = "stats.json"
BUILD_DIR = ".build"
"""Per-split plan and per-shard done records live here during and after a build."""


@dataclass(frozen=True)
class ShardRecord:
    name: str
    count: int
    bytes: int
    sha256: str
    sources_sha256: str | None = None
    """Digest of what the shard was built from (``shards.sources``); changes when its inputs do."""


@dataclass(frozen=True)
class SkippedPatch:
    patch_id: str
    error: str


@dataclass
class SplitEntry:
    """One split's shards and how they were built."""

    split: str
    modalities: list[str]
    shards: list[ShardRecord]
    skipped: list[SkippedPatch] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    """Build parameters (root, split_name, seed, max_count, ...), for provenance only."""
    dataset: str | None = None
    """What the shards hold: the dataset's name (``FLAIR-HUB``, ``FLAIR #2``) or ``toy`` (written by
    ``shards toy``, simulated); None in manifests written before this field."""
    dataset_key: str | None = None
    """Row of :data:`maestro.datasets.DATASETS` the shards were read with (its reader, its sizes);
    None in manifests written before this field, which hold FLAIR-HUB."""

    @property
    def num_samples(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "modalities": list(self.modalities),
            "shards": [asdict(s) for s in self.shards],
            "totals": {
                "shards": len(self.shards),
                "samples": self.num_samples,
                "bytes": self.num_bytes,
                "skipped": len(self.skipped),
            },
            "skipped": [asdict(s) for s in self.skipped],
            "source": self.source,
            "dataset": self.dataset,
            "dataset_key": self.dataset_key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitEntry:
        return cls(
            split=data["split"],
            modalities=list(data["modalities"]),
            shards=[ShardRecord(**s) for s in data["shards"]],
            skipped=[SkippedPatch(**s) for s in data.get("skipped", [])],
            source=dict(data.get("source", {})),
            dataset=data.get("dataset"),
            dataset_key=data.get("dataset_key"),
        )


@dataclass
class Manifest:
    splits: dict[str, SplitEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    encoding: str = ENCODING

    def split(self, name: str | None) -> SplitEntry:
        """The entry for ``name``; ``None`` is allowed when the manifest holds exactly one split."""
        if name is None:
            if len(self.splits) != 1:
                raise DataError(f"manifest holds splits {sorted(self.splits)}; say which one to use")
            return next(iter(self.splits.values()))
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(f"manifest has no split {name!r}; it holds {sorted(self.splits)}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "encoding": self.encoding,
            "splits": {k: v.to_json() for k, v in sorted(self.splits.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise DataError(f"{where}: not a {FORMAT_NAME} manifest (format={data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{where}: format version {data.get('format_version')}, this code reads {FORMAT_VERSION}"
            )
        try:
            splits = {k: SplitEntry.from_json(v) for k, v in data["splits"].items()}
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: malformed split entry ({exc!r})") from None
        return cls(
            splits=splits, format_version=data["format_version"], encoding=data.get("encoding", ENCODING)
        )


def manifest_path(path: str | Path) -> Path:
    """Accept either the shard directory or the manifest file itself."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest(path: str | Path) -> Manifest:
    file = manifest_path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError("no manifest (was the build finished?)", path=file) from None
    except ValueError as exc:
        raise DataError(f"manifest is not valid JSON ({exc})", path=file) from None
    return Manifest.from_json(data, where=str(file))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write, fsync, rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as stream:
        json.dump(data, stream, indent=1, sort_keys=False)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    lock_dir = out / BUILD_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def merge_split(out: Path, entry: SplitEntry) -> Manifest:
    """Add or replace one split's entry in ``out/manifest.json`` (under a lock)."""
    with _locked(out):
        file = out / MANIFEST_NAME
        manifest = read_manifest(file) if file.exists() else Manifest()
        manifest.splits[entry.split] = entry
        write_json_atomic(file, manifest.to_json())
    return manifest
