"""``shards verify``: does a shard directory hold exactly what its manifest says, all decodable?

Checks, per shard: present, size and sha256 as recorded, sample count as recorded, every sample
has exactly the manifest's members and each decodes (registry dtype and shape, dates), keys are
valid and unique within the split. Per directory: no shard or partial file that the manifest
does not list. Everything found is reported per shard, not just the first problem. Non-finite
values (NaN / inf, kept by ``shards build --allow-nan``) are not a problem but are counted per
modality and reported, so that a user knows whether training needs ``nan_policy: fill``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maestro.errors import DataError
from maestro.sample import Sample
from shards.format import META_MEMBER, array_member, decode_sample, validate_key
from shards.manifest import ShardRecord, file_sha256, read_manifest
from shards.reading import iter_shard

log = logging.getLogger(__name__)

MAX_PROBLEMS_PER_SHARD = 20


@dataclass
class ShardReport:
    split: str
    name: str
    samples: int = 0
    keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nonfinite: dict[str, list[int]] = field(default_factory=dict)
    """modality -> [non-finite values, samples holding any]."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_PER_SHARD:
            self.problems.append(problem)
        elif len(self.problems) == MAX_PROBLEMS_PER_SHARD:
            self.problems.append("... (further problems not listed)")


@dataclass
class VerifyReport:
    shards: list[ShardReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Directory-level problems: manifest unreadable, extra or unfinished files, duplicate keys."""

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)

    def lines(self) -> list[tuple[bool, str]]:
        """(is_problem, text) report lines, one block per shard, then a summary."""
        out = []
        for shard in self.shards:
            out.append(
                (not shard.ok, f"{'OK  ' if shard.ok else 'FAIL'} {shard.name}: {shard.samples} samples")
            )
            out.extend((True, f"       - {p}") for p in shard.problems)
        out.extend((True, f"FAIL {p}") for p in self.problems)
        out.extend((False, line) for line in _nonfinite_lines(self.shards))
        bad = sum(not s.ok for s in self.shards)
        out.append(
            (
                not self.ok,
                f"{'OK' if self.ok else 'FAILED'}: {len(self.shards)} shards checked, "
                f"{bad} with problems, {len(self.problems)} other problems",
            )
        )
        return out


def verify_shard(
    path: Path,
    split: str,
    record: ShardRecord,
    modalities: list[str],
    decode: bool = True,
    checksum: bool = True,
) -> ShardReport:
    """Check one shard against its manifest record (``checksum=False, decode=False``: presence and
    size only, the instant check training runs at start)."""
    report = ShardReport(split, record.name)
    if not path.is_file():
        report.add("missing: listed in the manifest but not on disk")
        return report
    size = path.stat().st_size
    if size != record.bytes:
        report.add(f"size {size} bytes, manifest says {record.bytes}")
    if checksum:
        digest = file_sha256(path)
        if digest != record.sha256:
            report.add(f"sha256 mismatch: {digest}, manifest says {record.sha256}")
    if not decode:
        return report
    expected = {META_MEMBER, *(array_member(m) for m in modalities)}
    try:
        for sample in iter_shard(str(path)):
            report.samples += 1
            key = sample["__key__"]
            report.keys.append(key)
            try:
                validate_key(key)
            except DataError as error:
                report.add(str(error))
            present = {k for k in sample if not k.startswith("__")}
            if present != expected:
                missing, extra = sorted(expected - present), sorted(present - expected)
                report.add(f"sample {key}: missing members {missing}, unexpected members {extra}")
                continue
            try:
                decoded = decode_sample(sample, modalities=modalities, where=f"sample {key}")
            except DataError as error:
                report.add(str(error))
                continue
            _count_nonfinite(report, decoded, modalities)
    except DataError as error:
        report.add(error.problem)
    if report.samples != record.count:
        report.add(f"{report.samples} samples, manifest says {record.count}")
    return report


def _count_nonfinite(report: ShardReport, sample: Sample, modalities: list[str]) -> None:
    for modality in modalities:
        array = sample[modality]
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            counts = report.nonfinite.setdefault(modality, [0, 0])
            counts[0] += bad
            counts[1] += 1


def _nonfinite_lines(shards: list[ShardReport]) -> list[str]:
    totals: dict[str, list[int]] = {}
    for shard in shards:
        for modality, (values, samples) in shard.nonfinite.items():
            entry = totals.setdefault(modality, [0, 0])
            entry[0] += values
            entry[1] += samples
    if not totals:
        return ["non-finite values (NaN/inf): none"] if any(s.samples for s in shards) else []
    parts = ", ".join(f"{m} {v} values in {n} samples" for m, (v, n) in sorted(totals.items()))
    return [f"non-finite values (NaN/inf, need nan_policy: fill to train): {parts}"]


def _verify_task(args: tuple[Path, str, ShardRecord, list[str], bool]) -> ShardReport:
    return verify_shard(*args)


def verify(
    out: Path, splits: Iterable[str] | None = None, *, decode: bool = True, workers: int = 1
) -> VerifyReport:
    """Verify the shard directory ``out`` (all splits of its manifest unless ``splits`` is given)."""
    out = Path(out)
    report = VerifyReport()
    try:
        manifest = read_manifest(out)
    except DataError as error:
        report.problems.append(str(error))
        return report
    names = sorted(manifest.splits) if splits is None else list(splits)
    tasks = []
    for name in names:
        try:
            entry = manifest.split(name)
        except DataError as error:
            report.problems.append(str(error))
            continue
        tasks.extend((out / s.name, name, s, list(entry.modalities), decode) for s in entry.shards)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            report.shards = list(pool.map(_verify_task, tasks))
    else:
        report.shards = [_verify_task(t) for t in tasks]
    _check_keys(report)
    listed = {s.name for entry in manifest.splits.values() for s in entry.shards}
    for file in sorted(out.iterdir()):
        if file.name.endswith(".tar") and file.name not in listed:
            report.problems.append(f"{file.name}: shard on disk but not in the manifest")
        elif file.name.endswith(".tar.partial"):
            report.problems.append(
                f"{file.name}: unfinished shard from an interrupted build (rerun the build)"
            )
    return report


def _check_keys(report: VerifyReport) -> None:
    by_split: dict[str, Counter[str]] = {}
    for shard in report.shards:
        by_split.setdefault(shard.split, Counter()).update(shard.keys)
    for split, counts in by_split.items():
        dupes = sorted(k for k, n in counts.items() if n > 1)
        if dupes:
            report.problems.append(
                f"split {split}: {len(dupes)} sample keys occur more than once, e.g. {dupes[:5]}"
            )
