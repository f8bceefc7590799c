"""``shards stats``: per-band mean / std / min / max / count per modality, streamed from shards.

Normalisation needs dataset-wide statistics, and the shards are the one place where a split's
rasters are contiguous. Each sample contributes its per-band count, mean and sum of squared
deviations in float64, merged with Chan et al.'s parallel update, which stays exact where a
naive sum of squares cancels catastrophically (DEM elevations ~300 m with ~1 m spread). Time
series count every date. Non-finite values (NaN, inf) are left out and counted separately.
``std`` is the population standard deviation. Labels are not images and are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from maestro.errors import ConfigError, DataError
from maestro.modalities import MODALITIES, get_modality
from shards.format import array_member, decode_sample
from shards.manifest import STATS_NAME, manifest_path, read_manifest, write_json_atomic
from shards.reading import iter_shard

log = logging.getLogger(__name__)


@dataclass
class BandStats:
    """Running per-band statistics of one modality (arrays of length ``num_bands``)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    nonfinite: np.ndarray

    @classmethod
    def empty(cls, num_bands: int) -> BandStats:
        zeros = np.zeros(num_bands, dtype=np.float64)
        return cls(
            count=np.zeros(num_bands, dtype=np.int64),
            mean=zeros.copy(),
            m2=zeros.copy(),
            minimum=np.full(num_bands, np.inf),
            maximum=np.full(num_bands, -np.inf),
            nonfinite=np.zeros(num_bands, dtype=np.int64),
        )

    @classmethod
    def of_array(cls, array: np.ndarray) -> BandStats:
        """Statistics of one raster, (C, H, W) or (T, C, H, W): bands on axis -3."""
        values = rearrange(array, "... c h w -> c (...  h w)").astype(np.float64)
        finite = np.isfinite(values) if np.issubdtype(array.dtype, np.floating) else None
        if finite is None or finite.all():
            count = np.full(values.shape[0], values.shape[1], dtype=np.int64)
            mean = values.mean(axis=1)
            m2 = np.square(values - mean[:, None]).sum(axis=1)
            return cls(
                count,
                mean,
                m2,
                values.min(axis=1),
                values.max(axis=1),
                np.zeros(values.shape[0], dtype=np.int64),
            )
        count = finite.sum(axis=1)
        safe = np.where(finite, values, 0.0)
        mean = np.divide(safe.sum(axis=1), count, out=np.zeros(len(count)), where=count > 0)
        m2 = np.where(finite, np.square(values - mean[:, None]), 0.0).sum(axis=1)
        minimum = np.where(finite, values, np.inf).min(axis=1)
        maximum = np.where(finite, values, -np.inf).max(axis=1)
        return cls(count.astype(np.int64), mean, m2, minimum, maximum, (~finite).sum(axis=1).astype(np.int64))

    def merge(self, other: BandStats) -> None:
        """Chan et al. pairwise update, in place."""
        total = self.count + other.count
        safe_total = np.maximum(total, 1)
        delta = other.mean - self.mean
        self.mean = self.mean + delta * other.count / safe_total
        self.m2 = self.m2 + other.m2 + np.square(delta) * self.count * other.count / safe_total
        self.count = total
        self.minimum = np.minimum(self.minimum, other.minimum)
        self.maximum = np.maximum(self.maximum, other.maximum)
        self.nonfinite = self.nonfinite + other.nonfinite

    def to_json(self, bands: Sequence[str]) -> dict[str, Any]:
        has = self.count > 0
        std = np.sqrt(np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=has))

        def listed(values: np.ndarray) -> list[float | None]:
            return [float(v) if ok else None for v, ok in zip(values, has, strict=True)]

        return {
            "bands": list(bands),
            "count": [int(c) for c in self.count],
            "mean": listed(self.mean),
            "std": listed(std),
            "min": listed(self.minimum),
            "max": listed(self.maximum),
            "nonfinite": [int(n) for n in self.nonfinite],
        }


def _stats_modalities(modalities: Iterable[str]) -> list[str]:
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modalities {unknown}; valid keys are {sorted(MODALITIES)}")
    return [m for m in modalities if get_modality(m).kind != "label"]


def shard_stats(url: str, modalities: Sequence[str]) -> tuple[int, dict[str, BandStats]]:
    """(samples, per-modality statistics) of one shard."""
    totals = {m: BandStats.empty(get_modality(m).num_bands) for m in modalities}
    samples = 0
    for item in iter_shard(url, members=[array_member(m) for m in modalities]):
        sample = decode_sample(item, modalities=modalities, where=f"shard {url}, sample {item['__key__']}")
        for modality in modalities:
            totals[modality].merge(BandStats.of_array(sample[modality]))
        samples += 1
    return samples, totals


def _shard_task(args: tuple[str, list[str]]) -> tuple[int, dict[str, BandStats]]:
    return shard_stats(*args)


def compute_stats(
    out: Path,
    splits: Sequence[str] = ("train",),
    *,
    modalities: Sequence[str] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Statistics over the given splits of the shard directory ``out`` (a JSON-ready dict)."""
    file = manifest_path(out)
    manifest = read_manifest(file)
    entries = [manifest.split(s) for s in splits]
    available = set.intersection(*(set(e.modalities) for e in entries))
    wanted = _stats_modalities(modalities if modalities is not None else entries[0].modalities)
    absent = [m for m in wanted if m not in available]
    if absent:
        raise DataError(f"modalities {absent} are not in every split of {list(splits)}", path=file)
    tasks = [(str(file.parent / s.name), wanted) for e in entries for s in e.shards]
    totals = {m: BandStats.empty(get_modality(m).num_bands) for m in wanted}
    samples = 0
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_shard_task, tasks))
    else:
        results = [_shard_task(t) for t in tasks]
    for count, per_modality in results:  # merged in shard order: the result does not depend on workers
        samples += count
        for modality, stats in per_modality.items():
            totals[modality].merge(stats)
    log.info("statistics over %d samples of %s", samples, list(splits))
    return {
        "splits": list(splits),
        "samples": samples,
        "std_definition": "population (ddof=0), over all pixels and dates, non-finite values excluded",
        "modalities": {m: totals[m].to_json(get_modality(m).bands) for m in wanted},
    }


def write_stats(out: Path, stats: dict[str, Any]) -> Path:
    """Write ``stats.json`` next to the manifest."""
    path = manifest_path(out).parent / STATS_NAME
    write_json_atomic(path, stats)
    return path
