"""``shards fill``: a shard set whose cloudy Sentinel-2 dates are dropped, interpolated or restored.

#29's downstream check trains crop type on series whose cloudy dates are (a) dropped, (b) filled by
linear interpolation in time, (c) restored by the gap-filling network. Each is a shard set written
from another: every sample of ``--from`` is read, its target series (the model's target, ``s2`` for
the baselines) processed by :mod:`maestro.evaluation.cloudy` or
:meth:`~maestro.api_gapfill.LoadedGapFill.restore_sample`, and written with every other member as
it was, under the same patch id and split. A filled pixel's mask is zeroed, so that downstream
date selection treats it as clear.

The writing is :func:`shards.writer.build`'s, with :class:`ShardSetReader` standing in for a
dataset reader: the output gets a manifest, atomic shards, resume and ``shards verify`` as a build
does. A patch's source state is its source shard and that shard's sha256, plus the fill (method,
options and the model's weights digest), so a rerun into the same ``--out`` rewrites the shards
whose source or fill changed and keeps the others. Shards are cut as the source's are (same order,
as many samples each). The manifest entry keeps the source's ``source`` and ``dataset`` and adds
``source.fill``: where it came from, how, and how many dates were dropped or pixels replaced (from
a pass over the source's masks, so that a resumed fill reports them whole).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.api_gapfill import LoadedGapFill, load_gapfill
from maestro.data.preprocess.transform import flagged_pixels, mask_companion
from maestro.datasets import DEFAULT_DATASET, get_dataset
from maestro.errors import ConfigError, DataError
from maestro.evaluation.cloudy import (
    cloudy_dates,
    drop_cloudy_dates,
    fillable,
    interpolate_cloudy,
    with_restored,
)
from maestro.sample import Sample
from shards.fill_config import BASELINE_TARGET, METHODS, FillConfig
from shards.format import array_member, decode_sample
from shards.manifest import SplitEntry, manifest_path, merge_split, read_manifest
from shards.plan import BuildConfig
from shards.reading import iter_shard
from shards.writer import build

log = logging.getLogger(__name__)

__all__ = ["METHODS", "FillConfig", "FillCounts", "FillResult", "ShardSetReader", "fill"]

_CACHED = 16
"""Processed samples kept by the reader: the build reads its first patches twice (its size probe)."""


@dataclass(frozen=True)
class FillCounts:
    """What a fill changed in one split (counted on the source's masks)."""

    dates: int
    dates_dropped: int
    pixels: int
    """Pixels of the target series over all its dates (each of them C values)."""
    pixels_replaced: int

    @property
    def changed_share(self) -> float:
        """Share of the dates dropped (``drop``) or of the pixels replaced (the fills)."""
        if self.dates_dropped:
            return self.dates_dropped / max(self.dates, 1)
        return self.pixels_replaced / max(self.pixels, 1)


@dataclass(frozen=True)
class FillResult:
    out: Path
    entries: dict[str, SplitEntry]
    counts: dict[str, FillCounts]


class ShardSetReader:
    """One split of a shard set as a dataset reader (``patch_ids``, ``read``, ``source_state``):
    samples decoded in shard order and passed through ``process`` up to ``batch_size`` at a time
    (the network restores a batch in one pass)."""

    def __init__(
        self,
        folder: Path,
        entry: SplitEntry,
        process: Callable[[list[Sample]], list[Sample]],
        state: list[str],
        batch_size: int = 1,
    ):
        self.source = folder
        self.process = process
        self.batch_size = batch_size
        self.state = state
        """The fill, as ``[method, digest of its options]``: part of every patch's source state."""
        self.records = {record.name: record for record in entry.shards}
        self.shard_of: dict[str, str] = {}
        for record in entry.shards:  # keys only: nothing but meta.json is extracted
            for members in iter_shard(str(folder / record.name), members=[]):
                self.shard_of[members["__key__"]] = record.name
        self.patch_ids = list(self.shard_of)
        self._stream: tuple[str, Iterator[dict[str, Any]]] | None = None
        self._cache: OrderedDict[str, Sample] = OrderedDict()
        self._cached = max(_CACHED, 2 * batch_size)

    def source_state(self, patch_id: str) -> dict[str, Any]:
        record = self.records[self.shard_of[patch_id]]
        return {"source shard": [record.name, record.sha256], "fill": self.state}

    def read(self, patch_id: str) -> Sample:
        if patch_id not in self._cache:
            keys, raw = zip(*self._raw(patch_id), strict=True)
            for key, done in zip(keys, self.process(list(raw)), strict=True):
                self._cache[key] = done
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
        return self._cache[patch_id]

    def _raw(self, patch_id: str) -> list[tuple[str, Sample]]:
        """The patch and up to ``batch_size - 1`` samples after it in its shard, read on from where
        the last read stopped (the build asks in shard order), from the shard's start otherwise."""
        name = self.shard_of[patch_id]
        url = str(self.source / name)
        for _ in range(2):
            if self._stream is None or self._stream[0] != name:
                self._stream = (name, iter_shard(url))
            for members in self._stream[1]:
                if members["__key__"] == patch_id:
                    found = [members, *itertools.islice(self._stream[1], self.batch_size - 1)]
                    return [
                        (item["__key__"], decode_sample(item, where=f"{url} sample {item['__key__']}"))
                        for item in found
                    ]
            self._stream = None
        raise DataError(f"sample {patch_id} is no longer in the shard", path=url)


def _weights_digest(loaded: LoadedGapFill) -> str:
    """sha256 of the network's tensors: a retrained model rewrites the shards it filled."""
    digest = hashlib.sha256()
    for name, tensor in loaded.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _processor(
    config: FillConfig, loaded: LoadedGapFill | None, key: str, threshold: float
) -> Callable[[list[Sample]], list[Sample]]:
    if loaded is not None:

        def restore(samples: list[Sample]) -> list[Sample]:
            restored = loaded.restore_samples(samples)
            return [
                with_restored(s, key, r.series, r.replaced) for s, r in zip(samples, restored, strict=True)
            ]

        return restore
    if config.method == "drop":
        return lambda samples: [
            drop_cloudy_dates(s, key, threshold, config.cloudy_date_fraction).sample for s in samples
        ]
    return lambda samples: [interpolate_cloudy(s, key, threshold).sample for s in samples]


def _count(
    folder: Path, entry: SplitEntry, key: str, method: str, threshold: float, fraction: float
) -> FillCounts:
    """What the fill changes in the split, from the source's masks alone."""
    mask_key = mask_companion(key).key
    dates = dropped = pixels = replaced = 0
    for record in entry.shards:
        url = str(folder / record.name)
        for members in iter_shard(url, members=[array_member(mask_key)]):
            mask = decode_sample(members, modalities=[mask_key], where=f"{url} sample {members['__key__']}")
            flags = flagged_pixels(mask[mask_key], threshold)
            dates, pixels = dates + len(flags), pixels + flags.size
            if method == "drop":
                dropped += int(cloudy_dates(flags, fraction).sum())
            else:
                replaced += int((fillable(flags) if method == "interpolate" else flags).sum())
    return FillCounts(dates, dropped, pixels, replaced)


def fill(config: FillConfig) -> FillResult:
    """Write the filled shard set (module docstring); refuses before writing anything."""
    manifest = read_manifest(config.source)
    folder = manifest_path(config.source).parent
    splits = config.splits or tuple(sorted(manifest.splits))
    entries = {split: manifest.split(split) for split in splits}
    loaded = load_gapfill(config.model, device=config.device) if config.method == "model" else None
    key = loaded.target if loaded is not None else BASELINE_TARGET
    threshold = _threshold(config, loaded)
    for split, entry in entries.items():
        needed = loaded.members if loaded is not None else [key, mask_companion(key).key]
        missing = [m for m in needed if m not in entry.modalities]
        if missing:
            what = (
                f"--model {config.model} reads" if loaded is not None else f"--method {config.method} needs"
            )
            raise ConfigError(
                f"{what} {missing}, which split {split!r} of {folder} lacks (it holds {entry.modalities})"
            )
    options: dict[str, Any] = {"method": config.method, "target": key, "cloud_threshold": threshold}
    if config.method == "drop":
        options["cloudy_date_fraction"] = config.cloudy_date_fraction
    if loaded is not None:
        options["weights_sha256"] = _weights_digest(loaded)
    state = [config.method, hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()]
    info = {"from": str(folder), **options}
    if loaded is not None:
        info.update(model=str(config.model), weights=loaded.note)
    process = _processor(config, loaded, key, threshold)
    written, counts = {}, {}
    for split, entry in entries.items():
        dataset = entry.dataset_key or DEFAULT_DATASET
        build_config = BuildConfig(
            root=folder,
            out=config.out,
            split=split,
            modalities=tuple(entry.modalities),
            max_size=10**18,  # cut by count alone, as the source's shards are
            max_count=max((record.count for record in entry.shards), default=1),
            seed=None,
            progress=config.progress,
            dataset=DEFAULT_DATASET if get_dataset(dataset).needs_config else dataset,
        )
        log.info("%s: %s %s of %s into %s", split, config.method, key, folder, config.out)
        result = build(build_config, ShardSetReader(folder, entry, process, state, config.batch_size))
        counts[split] = _count(folder, entry, key, config.method, threshold, config.cloudy_date_fraction)
        chain = {"previous": entry.source["fill"]} if "fill" in entry.source else {}
        source = {**entry.source, "fill": {**info, **chain, **dataclasses.asdict(counts[split])}}
        written[split] = dataclasses.replace(
            result.entry, source=source, dataset=entry.dataset, dataset_key=entry.dataset_key
        )
        merge_split(config.out, written[split])
        log.info(
            "%s: %.2f %% of the %s %s", split, 100 * counts[split].changed_share, key,
            "dates dropped" if config.method == "drop" else "pixels replaced",
        )  # fmt: skip
    return FillResult(config.out, written, counts)


def _threshold(config: FillConfig, loaded: LoadedGapFill | None) -> float:
    if loaded is None:
        return 0.0 if config.cloud_threshold is None else float(config.cloud_threshold)
    own = loaded.model.config.cloud_threshold
    if config.cloud_threshold is not None and config.cloud_threshold != own:
        raise ConfigError(
            f"--cloud-threshold {config.cloud_threshold}: the model flags pixels above its own "
            f"cloud_threshold {own} (leave the option out)"
        )
    return float(own)
