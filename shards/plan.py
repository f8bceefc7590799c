"""What ``shards build`` does, and the patch -> shard plan it follows.

The split's patches are shuffled once with a fixed seed (so every shard is a random sample of the
split and a small loader shuffle buffer suffices) and cut into shards of ``samples_per_shard``
patches, estimated from the encoded size of the first patches. The plan is stored in
``.build/{split}/plan.json`` so that a resumed build writes exactly the same shards.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.data.layout import SPLIT_NAME
from maestro.datasets import DEFAULT_DATASET, Dataset, ReaderOptions, configured_dataset, get_dataset
from maestro.errors import ConfigError, DataError
from maestro.modalities import MODALITIES, resolve, with_companions
from shards.format import FORMAT_VERSION, encode_sample, validate_key
from shards.manifest import BUILD_DIR, write_json_atomic

DEFAULT_MODALITIES: tuple[str, ...] = get_dataset(DEFAULT_DATASET).build_modalities
"""FLAIR-HUB's default MAESTRO inputs plus its labels: one build serves pretraining and fine-tuning
(another dataset's default is its row's ``build_modalities``)."""
PROBE_SAMPLES = 8
"""Patches encoded up front to turn ``max_size`` into a sample count per shard."""
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_size(text: str | int) -> int:
    """``'1GB'``, ``'500MiB'``, ``'2e9'``-free plain byte counts -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise ConfigError(f"cannot parse size {text!r}; use e.g. 1GB, 500MB, 2GiB or a byte count")
    unit = (match[2] or "").lower().removesuffix("b")
    return int(float(match[1]) * _UNITS[unit])


def _modality_keys(modalities: Sequence[str], dataset: Dataset) -> list[str]:
    """Requested keys plus their masks; an unknown key, or one the dataset lacks, is a ConfigError
    listing the valid ones."""
    if isinstance(modalities, str):
        raise ConfigError(f"modalities must be a list of keys, got the string {modalities!r}")
    unknown = [k for k in modalities if k not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modalities {unknown}; valid keys are {sorted(MODALITIES)}")
    keys = with_companions(modalities)
    resolve(keys)  # ConfigError: listed twice
    dataset.check_modalities(keys)
    return keys


@dataclass(frozen=True)
class BuildConfig:
    """What ``shards build`` does; validated at construction."""

    root: Path
    out: Path
    split: str = "train"
    modalities: tuple[str, ...] | None = None
    """Registry keys to store (masks are added); None: the dataset's ``build_modalities``."""
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
    force: bool = False
    """Rewrite every shard of the split, even those an earlier run finished and whose sources are unchanged."""
    allow_nan: bool = False
    """Keep NaN / inf pixels of float rasters (Sentinel-1 borders) instead of rejecting the patch."""
    dataset: str = DEFAULT_DATASET
    """Row of :data:`maestro.datasets.DATASETS` whose reader opens ``root``."""
    data_config: Path | None = None
    """``custom``: the data config YAML (``root`` is then its folder)."""

    def __post_init__(self) -> None:
        if self.data_config is not None:
            object.__setattr__(self, "data_config", Path(self.data_config))
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "out", Path(self.out))
        row = self.dataset_row
        keys = row.build_modalities if self.modalities is None else self.modalities
        object.__setattr__(self, "modalities", tuple(_modality_keys(keys, row)))
        if not _SPLIT_NAME.match(self.split):
            raise ConfigError(
                f"split {self.split!r} must be a plain name ([A-Za-z0-9_-]), it names the shard files"
            )
        if self.max_count < 1 or self.max_size < 1:
            raise ConfigError(
                f"max_count and max_size must be positive (got {self.max_count}, {self.max_size})"
            )
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def shard_name(self, index: int) -> str:
        return f"{self.split}-{index:06d}.tar"

    @property
    def dataset_row(self) -> Dataset:
        """The dataset's row; a custom dataset's, as its data config describes it."""
        return configured_dataset(self.dataset, self.data_config)

    def reader_options(self) -> ReaderOptions:
        """What the dataset's registered reader is opened with (:mod:`maestro.data.zoo`)."""
        return ReaderOptions(
            root=self.root,
            split=self.split,
            modalities=tuple(self.modalities or ()),
            split_name=self.split_name,
            split_csv=self.split_csv,
            allow_nan=self.allow_nan,
            data_config=self.data_config,
        )


@dataclass
class ShardTask:
    index: int
    name: str
    patch_ids: list[str]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.patch_ids).encode()).hexdigest()


def encoded(reader: Any, patch_id: str, modalities: Sequence[str]) -> dict[str, Any]:
    """One patch read and encoded as shard members (raises the reader's DataError)."""
    return encode_sample(reader.read(patch_id), modalities)


def plan_file(config: BuildConfig) -> Path:
    return config.out / BUILD_DIR / config.split / "plan.json"


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
            members = encoded(reader, patch_id, config.modalities)
        except DataError:
            continue
        sizes.append(sum(512 + len(v) for k, v in members.items() if not k.startswith("__")))
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
    file = plan_file(config)
    if file.exists():
        stored = json.loads(file.read_text())
        if stored.get("params") != params:
            changed = sorted(k for k in params if stored.get("params", {}).get(k) != params[k])
            raise ConfigError(
                f"{config.out} holds an unfinished or finished {config.split!r} build with other parameters "
                f"(differs in {changed}); use a new --out or remove that build's shards and {file.parent}"
            )
        per_shard = int(stored["samples_per_shard"])
    else:
        per_shard = _probe_samples_per_shard(config, reader, ids)
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(file, {"params": params, "samples_per_shard": per_shard})
    return [
        ShardTask(i, config.shard_name(i), ids[start : start + per_shard])
        for i, start in enumerate(range(0, len(ids), per_shard))
    ]
