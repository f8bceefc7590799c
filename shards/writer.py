"""Build WebDataset shards from one split of a dataset (FLAIR-HUB by default; any row of
:data:`maestro.datasets.DATASETS`, read by its registered reader): write (in parallel), resume,
manifest.

The build follows a stored plan (:mod:`shards.plan`); each worker process writes whole shards
from it, to ``name.tar.partial`` first, then fsync and rename, and records what it wrote in
``.build/{split}/{name}.done.json`` (count, bytes, sha256, skipped patches, and the state of
every source file, :mod:`shards.sources`). A rerun discards partials, keeps every shard whose done
record, checksum and sources still match, and writes the rest: shards whose source files
changed, shards with skipped patches that now read (or, without ``--skip-bad``, any skipped
patch), all of them with ``--force``. Only then is the split's entry merged into
``manifest.json``. A build that fails before finishing any shard leaves nothing of its own behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm import tqdm

from maestro.data import zoo
from maestro.data.layout import TOY_MARKER
from maestro.errors import DataError
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
from shards.plan import (  # re-exported: the build's public names
    DEFAULT_MODALITIES,
    BuildConfig,
    ShardTask,
    encoded,
    parse_size,
    plan_shards,
)
from shards.sources import first_change, shard_sources, sources_digest

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODALITIES",
    "BuildConfig",
    "BuildResult",
    "ShardTask",
    "build",
    "parse_size",
    "plan_shards",
]

TAR_MTIME = 0
"""Fixed member mtime: the same input gives byte-identical shards (and checksums) on rebuild.
An int, not 0.0: tarfile writes a pax header for every member with a float mtime, which doubles
the header parsing of every read."""


@dataclass
class ShardResult:
    record: ShardRecord
    skipped: list[SkippedPatch] = field(default_factory=list)
    reused: bool = False
    replaced: bool = False
    """Written over a shard an earlier run had finished (stale sources, retried patch, --force)."""


@dataclass
class BuildResult:
    entry: SplitEntry
    written: int
    reused: int
    replaced: int = 0


# ------------------------------------------------------------------------------------ reading


def _open_reader(config: BuildConfig) -> Any:
    """The reader the dataset's row registered (:mod:`maestro.data.zoo`)."""
    return zoo.open_reader(config.dataset, config.reader_options())


def _provenance(config: BuildConfig) -> str:
    """The manifest's ``dataset``: ``toy`` for a tree written by ``shards toy``, else the dataset's
    name (``FLAIR-HUB``, ``FLAIR #2``)."""
    return "toy" if (config.root / TOY_MARKER).is_file() else config.dataset_row.name


_WORKER: dict[str, Any] = {}
"""Per-process state of pool workers (one reader each, opened once)."""


def _init_worker(config: BuildConfig) -> None:
    # The parent already logged what the reader says at INFO; every worker would repeat it.
    for module in zoo.MODULES:
        logging.getLogger(module.__name__).setLevel(logging.WARNING)
    _WORKER["config"] = config
    _WORKER["reader"] = _open_reader(config)


# ------------------------------------------------------------------------------------ resuming


def _done_file(config: BuildConfig, name: str) -> Path:
    return config.out / BUILD_DIR / config.split / f"{name}.done.json"


def _retry_skipped(config: BuildConfig, reader: Any, skipped: list[SkippedPatch]) -> str | list[SkippedPatch]:
    """Why a shard with skipped patches must be rewritten, or the patches' current errors."""
    if not config.skip_bad:
        return f"it skipped patch {skipped[0].patch_id} and --skip-bad is not given"
    errors = []
    for patch in skipped:
        try:
            encoded(reader, patch.patch_id, config.modalities)
        except DataError as error:
            errors.append(SkippedPatch(patch.patch_id, str(error)))
            continue
        return f"skipped patch {patch.patch_id} now reads"
    return errors


def _reusable(config: BuildConfig, reader: Any, task: ShardTask) -> ShardResult | str | None:
    """The finished shard from an earlier run if it still holds; else why it is rewritten
    (``None``: there is none)."""
    done, path = _done_file(config, task.name), config.out / task.name
    if not (done.exists() and path.exists()):
        return None
    if config.force:
        return "--force"
    try:
        record = json.loads(done.read_text())
        if record["fingerprint"] != task.fingerprint or record["bytes"] != path.stat().st_size:
            return "it does not match its done record"
        if "sources" not in record:
            return "its done record predates source tracking"
        if record.get("allow_nan", False) and not config.allow_nan:
            return "it was built with --allow-nan"
        change = first_change(record["sources"], shard_sources(reader, task.patch_ids))
        if change is not None:
            return f"its sources changed ({change})"
        skipped = [SkippedPatch(**s) for s in record["skipped"]]
        if skipped:
            retried = _retry_skipped(config, reader, skipped)
            if isinstance(retried, str):
                return retried
            skipped = retried
        if file_sha256(path) != record["sha256"]:
            log.warning("%s: checksum differs from its done record", path)
            return "its checksum differs from its done record"
        shard = ShardRecord(
            task.name, record["count"], record["bytes"], record["sha256"], record["sources_sha256"]
        )
        return ShardResult(shard, skipped, reused=True)
    except (ValueError, KeyError, TypeError):
        return "its done record is unreadable"


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


def write_shard(
    config: BuildConfig, reader: Any, task: ShardTask, on_sample: Callable[[], None] | None = None
) -> ShardResult:
    """Write one shard atomically (partial file, fsync, rename, done record), or reuse it."""
    reuse = _reusable(config, reader, task)
    if isinstance(reuse, ShardResult):
        return reuse
    if reuse is not None and reuse != "--force":
        log.info("rewriting %s: %s", task.name, reuse)
    sources = shard_sources(reader, task.patch_ids)
    final = config.out / task.name
    partial = final.with_name(final.name + ".partial")
    skipped: list[SkippedPatch] = []
    count = 0
    with open(partial, "wb") as stream:
        hashing = _HashingFile(stream)
        with wds.TarWriter(hashing, encoder=False, mtime=TAR_MTIME) as tar:
            for patch_id in task.patch_ids:
                try:
                    tar.write(encoded(reader, patch_id, config.modalities))
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
    done = _done_file(config, task.name)
    done.unlink(
        missing_ok=True
    )  # a kill before the new record is written must not pair it with the new shard
    os.replace(partial, final)
    fsync_dir(final.parent)
    record = ShardRecord(task.name, count, hashing.size, hashing.sha256.hexdigest(), sources_digest(sources))
    write_json_atomic(
        done,
        {
            **asdict(record),
            "fingerprint": task.fingerprint,
            "skipped": [asdict(s) for s in skipped],
            "allow_nan": config.allow_nan,
            "sources": sources,
        },
    )
    return ShardResult(record, skipped, replaced=reuse is not None)


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


def _clean_after_failure(config: BuildConfig, created: bool) -> None:
    """Remove this split's partial shards; if no shard of the split is finished, also its plan
    and ``out`` itself when this run created it (finished shards stay for the next run)."""
    for partial in config.out.glob(f"{config.split}-*.tar.partial"):
        partial.unlink(missing_ok=True)
    if not config.out.is_dir() or any(config.out.glob(f"{config.split}-*.tar")):
        return
    build_dir = config.out / BUILD_DIR
    shutil.rmtree(build_dir / config.split, ignore_errors=True)
    if build_dir.is_dir() and {p.name for p in build_dir.iterdir()} <= {"manifest.lock"}:
        shutil.rmtree(build_dir, ignore_errors=True)
    if created and not any(config.out.iterdir()):
        config.out.rmdir()
        log.debug("removed %s: the failed build had finished no shard", config.out)


def build(config: BuildConfig, reader: Any | None = None) -> BuildResult:
    """Build (or resume) one split's shards and merge its entry into ``manifest.json``."""
    reader = reader if reader is not None else _open_reader(config)
    created = not config.out.exists()
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        return _build(config, reader)
    except BaseException:
        _clean_after_failure(config, created)
        raise


def _build(config: BuildConfig, reader: Any) -> BuildResult:
    tasks = plan_shards(config, reader)
    _discard_partials(config)
    total = sum(len(t.patch_ids) for t in tasks)
    log.info(
        "building %d %s shards of up to %d samples in %s%s",
        len(tasks),
        config.split,
        len(tasks[0].patch_ids),
        config.out,
        " (--force: rewriting every shard)" if config.force else "",
    )
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
        dataset=_provenance(config),
        dataset_key=config.dataset,
    )
    merge_split(config.out, entry)
    reused = sum(r.reused for r in results)
    replaced = sum(r.replaced for r in results)
    if skipped:
        log.warning("%s: skipped %d bad patches (listed in the manifest)", config.split, len(skipped))
    log.info(
        "%s: %d samples in %d shards (%d written, %d kept from an earlier run, %d rewritten over an "
        "earlier run's), %.2f GB",
        config.split,
        entry.num_samples,
        len(results),
        len(results) - reused,
        reused,
        replaced,
        entry.num_bytes / 1e9,
    )
    return BuildResult(entry, written=len(results) - reused, reused=reused, replaced=replaced)


def _source_info(config: BuildConfig) -> dict[str, Any]:
    return {
        "root": config.root,
        "split_name": config.split_name,
        "split_csv": config.split_csv,
        "seed": config.seed,
        "max_count": config.max_count,
        "max_size": config.max_size,
        "allow_nan": config.allow_nan,
    }
