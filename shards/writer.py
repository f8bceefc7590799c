"""Build WebDataset shards from a FLAIR-HUB split: plan, write (in parallel), resume, manifest.

The build is planned before anything is written: the split's patches are shuffled once with a
fixed seed (so every shard is a random sample of the split and a small loader shuffle buffer
suffices) and cut into shards of ``samples_per_shard`` patches. The plan is stored in
``.build/{split}/plan.json`` and every finished shard gets a done record
``.build/{split}/{name}.done.json``; each worker process writes whole shards from that plan, to
``name.tar.partial`` first, then fsync and rename. A rerun after a crash or kill discards the
partials, keeps every shard whose done record and checksum still match, and writes the rest;
only then is the split's entry merged into ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm import tqdm

from maestro.data.layout import SPLIT_NAME
from maestro.errors import ConfigError, DataError
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, resolve, with_companions
from shards.format import FORMAT_VERSION, encode_sample, validate_key
from shards.manifest import (
    BUILD_DIR,
    ShardRecord,
    SkippedPatch,
    SplitEntry,
    file_sha256,
    fsync_dir,
    merge_split,
    write_json_atomic,
)

log = logging.getLogger(__name__)

DEFAULT_MODALITIES: tuple[str, ...] = DEFAULT_INPUTS + tuple(k for k, m in MODALITIES.items() if m.kind == "label")
"""The MAESTRO default inputs plus every label: one build serves pretraining and fine-tuning."""
PROBE_SAMPLES = 8
"""Patches encoded up front to turn ``max_size`` into a sample count per shard."""
TAR_MTIME = 0
"""Fixed member mtime: the same input gives byte-identical shards (and checksums) on rebuild.
An int, not 0.0: tarfile writes a pax header for every member with a float mtime, which doubles
the header parsing of every read."""
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str | int) -> int:
    """``'1GB'``, ``'500MiB'``, ``'2e9'``-free plain byte counts -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise ConfigError(f"cannot parse size {text!r}; use e.g. 1GB, 500MB, 2GiB or a byte count")
    unit = (match[2] or "").lower().removesuffix("b")
    return int(float(match[1]) * _UNITS[unit])


@dataclass(frozen=True)
class BuildConfig:
    """What ``shards build`` does; validated at construction."""

    root: Path
    out: Path
    split: str = "train"
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    max_size: int = 10**9
    """Target shard size in bytes (estimated from the first patches, so approximate)."""
    max_count: int = 10_000
    workers: int = 1
    split_name: str = SPLIT_NAME
    split_csv: Path | None = None
    skip_bad: bool = False
    """Skip patches the reader rejects (counted and listed in the manifest) instead of stopping."""
    seed: int | None = 0
    """Shuffles patches across shards; ``None`` keeps split-CSV order."""
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "out", Path(self.out))
        keys = with_companions(self.modalities)
        resolve(keys)
        object.__setattr__(self, "modalities", tuple(keys))
        if not _SPLIT_NAME.match(self.split):
            raise ConfigError(f"split {self.split!r} must be a plain name ([A-Za-z0-9_-]), it names the shard files")
        if self.max_count < 1 or self.max_size < 1:
            raise ConfigError(f"max_count and max_size must be positive (got {self.max_count}, {self.max_size})")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def shard_name(self, index: int) -> str:
        return f"{self.split}-{index:06d}.tar"

    def reader_args(self) -> dict[str, Any]:
        return {
            "root": self.root, "modalities": list(self.modalities), "split": self.split,
            "split_name": self.split_name, "split_csv": self.split_csv,
        }


@dataclass
class ShardTask:
    index: int
    name: str
    patch_ids: list[str]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.patch_ids).encode()).hexdigest()


@dataclass
class ShardResult:
    record: ShardRecord
    skipped: list[SkippedPatch] = field(default_factory=list)
    reused: bool = False


@dataclass
class BuildResult:
    entry: SplitEntry
    written: int
    reused: int


# ------------------------------------------------------------------------------------ reading


def _open_reader(config: BuildConfig) -> Any:
    from maestro.data.flairhub import FlairHubReader

    return FlairHubReader(**config.reader_args())


_WORKER: dict[str, Any] = {}
"""Per-process state of pool workers (one reader each, opened once)."""


def _init_worker(config: BuildConfig) -> None:
    _WORKER["config"] = config
    _WORKER["reader"] = _open_reader(config)


def _encoded(reader: Any, patch_id: str, modalities: Sequence[str]) -> dict[str, Any]:
    sample = reader.read(patch_id)
    return encode_sample(sample, modalities)


# ------------------------------------------------------------------------------------ planning


def _plan_file(config: BuildConfig) -> Path:
    return config.out / BUILD_DIR / config.split / "plan.json"


def _done_file(config: BuildConfig, name: str) -> Path:
    return config.out / BUILD_DIR / config.split / f"{name}.done.json"


def _ordered_ids(patch_ids: Sequence[str], seed: int | None) -> list[str]:
    ids = [validate_key(p) for p in patch_ids]
    duplicates = sorted(p for p, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DataError(f"patch ids listed more than once in the split: {duplicates[:5]}")
    if seed is not None:
        random.Random(seed).shuffle(ids)
    return ids


def _probe_samples_per_shard(config: BuildConfig, reader: Any, ids: Sequence[str]) -> int:
    """Samples per shard from the encoded size of the first few patches (+10 % for series length
    variation); bad patches are ignored here, the build proper reports them."""
    sizes = []
    for patch_id in ids[:PROBE_SAMPLES]:
        try:
            encoded = _encoded(reader, patch_id, config.modalities)
        except DataError:
            continue
        sizes.append(sum(512 + len(v) for k, v in encoded.items() if not k.startswith("__")))
    if not sizes:
        return config.max_count
    per_sample = 1.1 * sum(sizes) / len(sizes)
    return max(1, min(config.max_count, int(config.max_size // per_sample)))


def _plan_params(config: BuildConfig, ids: Sequence[str]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "split": config.split,
        "modalities": list(config.modalities),
        "split_name": config.split_name,
        "split_csv": str(config.split_csv) if config.split_csv else None,
        "seed": config.seed,
        "max_count": config.max_count,
        "max_size": config.max_size,
        "patches_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }


def plan_shards(config: BuildConfig, reader: Any) -> list[ShardTask]:
    """Deterministic patch -> shard assignment, stored so that a resumed build uses the same one."""
    ids = _ordered_ids(reader.patch_ids, config.seed)
    if not ids:
        raise DataError(f"split {config.split!r} has no patches", path=getattr(reader, "source", config.root))
    params = _plan_params(config, ids)
    plan_file = _plan_file(config)
    if plan_file.exists():
        stored = json.loads(plan_file.read_text())
        if stored.get("params") != params:
            changed = sorted(k for k in params if stored.get("params", {}).get(k) != params[k])
            raise ConfigError(
                f"{config.out} holds an unfinished or finished {config.split!r} build with other parameters "
                f"(differs in {changed}); use a new --out or remove that build's shards and {plan_file.parent}"
            )
        per_shard = int(stored["samples_per_shard"])
    else:
        per_shard = _probe_samples_per_shard(config, reader, ids)
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plan_file, {"params": params, "samples_per_shard": per_shard})
    return [
        ShardTask(i, config.shard_name(i), ids[start : start + per_shard])
        for i, start in enumerate(range(0, len(ids), per_shard))
    ]


# ------------------------------------------------------------------------------------ writing


class _HashingFile:
    """File wrapper that hashes and counts what tarfile streams through it."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()


def _reusable(config: BuildConfig, task: ShardTask) -> ShardResult | None:
    """A finished shard from an earlier run, if its done record and checksum still hold."""
    done, path = _done_file(config, task.name), config.out / task.name
    if not (done.exists() and path.exists()):
        return None
    try:
        record = json.loads(done.read_text())
        if record["fingerprint"] != task.fingerprint or record["bytes"] != path.stat().st_size:
            return None
        if file_sha256(path) != record["sha256"]:
            log.warning("%s: checksum differs from its done record; rewriting it", path)
            return None
        return ShardResult(
            ShardRecord(task.name, record["count"], record["bytes"], record["sha256"]),
            [SkippedPatch(**s) for s in record["skipped"]],
            reused=True,
        )
    except (ValueError, KeyError, TypeError):
        return None


def write_shard(config: BuildConfig, reader: Any, task: ShardTask, on_sample: Callable[[], None] | None = None) -> ShardResult:
    """Write one shard atomically (partial file, fsync, rename, done record), or reuse it."""
    reused = _reusable(config, task)
    if reused is not None:
        return reused
    final = config.out / task.name
    partial = final.with_name(final.name + ".partial")
    skipped: list[SkippedPatch] = []
    count = 0
    with open(partial, "wb") as stream:
        hashing = _HashingFile(stream)
        with wds.TarWriter(hashing, encoder=False, mtime=TAR_MTIME) as tar:
            for patch_id in task.patch_ids:
                try:
                    tar.write(_encoded(reader, patch_id, config.modalities))
                    count += 1
                except DataError as error:
                    if not config.skip_bad:
                        raise
                    log.warning("skipping %s: %s", patch_id, error)
                    skipped.append(SkippedPatch(patch_id, str(error)))
                if on_sample is not None:
                    on_sample()
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, final)
    fsync_dir(final.parent)
    record = ShardRecord(task.name, count, hashing.size, hashing.sha256.hexdigest())
    write_json_atomic(
        _done_file(config, task.name),
        {**asdict(record), "fingerprint": task.fingerprint, "skipped": [asdict(s) for s in skipped]},
    )
    return ShardResult(record, skipped)


def _write_in_worker(task: ShardTask) -> ShardResult:
    return write_shard(_WORKER["config"], _WORKER["reader"], task)


def _discard_partials(config: BuildConfig) -> None:
    for partial in config.out.glob(f"{config.split}-*.tar.partial"):
        log.info("discarding unfinished %s", partial.name)
        partial.unlink()


def _run_serial(config: BuildConfig, reader: Any, tasks: list[ShardTask], bar: tqdm) -> list[ShardResult]:
    results = []
    for task in tasks:
        before = bar.n
        result = write_shard(config, reader, task, on_sample=lambda: bar.update(1))
        if result.reused:
            bar.update(len(task.patch_ids) - (bar.n - before))
        results.append(result)
    return results


def _run_pool(config: BuildConfig, tasks: list[ShardTask], bar: tqdm) -> list[ShardResult]:
    """Whole shards per worker; the first failure cancels what has not started and is re-raised
    (finished shards stay, so the next run resumes)."""
    results: dict[int, ShardResult] = {}
    with ProcessPoolExecutor(config.workers, initializer=_init_worker, initargs=(config,)) as pool:
        futures = {pool.submit(_write_in_worker, task): task for task in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    task = futures[future]
                    results[task.index] = future.result()
                    bar.update(len(task.patch_ids))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [results[t.index] for t in tasks]


def build(config: BuildConfig, reader: Any | None = None) -> BuildResult:
    """Build (or resume) one split's shards and merge its entry into ``manifest.json``."""
    config.out.mkdir(parents=True, exist_ok=True)
    reader = reader if reader is not None else _open_reader(config)
    tasks = plan_shards(config, reader)
    _discard_partials(config)
    total = sum(len(t.patch_ids) for t in tasks)
    log.info("building %d %s shards of up to %d samples in %s", len(tasks), config.split,
             len(tasks[0].patch_ids), config.out)
    with tqdm(total=total, unit="sample", desc=f"{config.split} shards", disable=not config.progress) as bar:
        if config.workers == 1 or len(tasks) == 1:
            results = _run_serial(config, reader, tasks, bar)
        else:
            results = _run_pool(config, tasks, bar)
    skipped = [s for r in results for s in r.skipped]
    entry = SplitEntry(
        split=config.split,
        modalities=list(config.modalities),
        shards=[r.record for r in results],
        skipped=skipped,
        source={k: (str(v) if isinstance(v, Path) else v) for k, v in _source_info(config).items()},
    )
    merge_split(config.out, entry)
    reused = sum(r.reused for r in results)
    if skipped:
        log.warning("%s: skipped %d bad patches (listed in the manifest)", config.split, len(skipped))
    log.info("%s: %d samples in %d shards (%d written, %d kept from an earlier run), %.2f GB",
             config.split, entry.num_samples, len(results), len(results) - reused, reused, entry.num_bytes / 1e9)
    return BuildResult(entry, written=len(results) - reused, reused=reused)


def _source_info(config: BuildConfig) -> dict[str, Any]:
    return {
        "root": config.root, "split_name": config.split_name, "split_csv": config.split_csv,
        "seed": config.seed, "max_count": config.max_count, "max_size": config.max_size,
    }
