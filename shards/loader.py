"""Streaming loader over shards: decode -> MAESTRO preprocessing -> collate, one CPU to many nodes.

Training (``mode='train'``): every rank and data-loader worker draws shards with replacement
(``wds.ResampledShards``, seeded by base seed, epoch, rank and worker), mixes samples in a
shuffle buffer and yields exactly ``batches_per_epoch`` full batches per rank (``with_epoch``),
so DDP ranks never wait on one that ran out. ``resample=False`` instead walks a per-epoch
shuffled shard list split by rank and worker, repeated as needed.

Evaluation (``mode='eval'``): shards are dealt round-robin to ranks (:class:`SplitByRank`) and
then to workers (``wds.split_by_worker``), so N ranks x M workers see every sample exactly once;
with fewer shards than slots some slots are simply empty. The last batch may be partial.

Errors: a truncated shard, a shard with fewer samples than its manifest entry, a sample missing a
member or not decoding raise :class:`DataError` naming shard and sample; ``on_error='skip'``
logs each one with a running count and goes on. A DataError raised in a data-loader worker
reaches the caller of :class:`ShardLoader` as the same one-line DataError (torch would turn it
into a multi-line "Caught DataError in DataLoader worker" message); the worker's traceback is
attached as a note, which only a printed traceback shows.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset
from webdataset.utils import make_seed, pytorch_worker_info

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import MaestroTransform, build_preprocess_config
from maestro.errors import ConfigError, DataError
from maestro.modalities import resolve
from maestro.sample import Sample
from shards.errors import ErrorPolicy, ForwardWorkerErrors, OnError, WorkerDataError
from shards.format import array_member, decode_sample
from shards.reading import ShardSource, iter_shard, resolve_source

log = logging.getLogger(__name__)

Mode = Literal["train", "eval"]
Preprocess = Callable[[Sample, np.random.Generator], Any]
"""raw sample, per-worker generator -> model sample (``MaestroTransform`` has this signature)."""


@dataclass(frozen=True)
class LoaderConfig:
    """How shards are streamed; validated at construction."""

    mode: Mode = "train"
    batch_size: int | None = 32
    """Samples per batch (collated in the workers); ``None`` yields single samples."""
    num_workers: int = 4
    batches_per_epoch: int | None = None
    """Training only: batches per rank per epoch; default = manifest samples / (world x batch)."""
    resample: bool = True
    """Training only: draw shards with replacement (no rank ever runs dry)."""
    shuffle_buffer: int = 64
    """Training only: encoded samples held for mixing, ~3-4 MB each for the default modalities."""
    shuffle_initial: int | None = None
    """Training only: samples buffered before the first is yielded; default min(shuffle_buffer, 16)."""
    seed: int = 0
    rank: int | None = None
    world_size: int | None = None
    """Default: from ``RANK``/``WORLD_SIZE`` or ``torch.distributed`` (webdataset's rule)."""
    on_error: OnError = "raise"
    modalities: tuple[str, ...] | None = None
    """Modalities to decode (others are not extracted); default: all in the sample."""
    split: str | None = None
    """Split to read when the source is a manifest holding several."""
    pin_memory: bool = False
    prefetch_factor: int | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    """Default: ``maestro.data.collate.collate_model_samples`` (``list`` without preprocessing)."""

    def __post_init__(self) -> None:
        if self.mode not in ("train", "eval"):
            raise ConfigError(f"mode must be 'train' or 'eval', got {self.mode!r}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.shuffle_initial is None and self.shuffle_buffer >= 1:
            object.__setattr__(self, "shuffle_initial", min(self.shuffle_buffer, 16))
        if self.shuffle_buffer < 1 or not 1 <= self.shuffle_initial <= self.shuffle_buffer:  # type: ignore[operator]
            raise ConfigError("need 1 <= shuffle_initial <= shuffle_buffer")
        if (self.rank is None) != (self.world_size is None):
            raise ConfigError("give both rank and world_size, or neither")
        if self.world_size is not None and not 0 <= self.rank < self.world_size:  # type: ignore[operator]
            raise ConfigError(f"rank {self.rank} is outside world_size {self.world_size}")
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))
            resolve(self.modalities)  # ConfigError: unknown or listed twice


# ----------------------------------------------------------------------------- seeds and splits


@dataclass
class EpochSeeds:
    """Base seed, rank and the current epoch, shared by reference by every stage.

    Workers receive a copy of the pipeline when an epoch's iterator starts, so setting ``epoch``
    in the main process before iterating reaches them.
    """

    seed: int
    rank: int
    world_size: int
    epoch: int = 0

    def worker_seed(self, *extra: int) -> int:
        _, _, worker, _ = pytorch_worker_info()
        return make_seed(self.seed, self.epoch, self.rank, worker, *extra)


@dataclass
class RankWorkerSeed:
    """``worker_seed`` callable for ``wds.ResampledShards`` (picklable, unlike a lambda)."""

    seeds: EpochSeeds

    def __call__(self) -> int:
        return self.seeds.worker_seed()


@dataclass
class SplitByRank:
    """``wds.split_by_node`` with an explicit rank (simulated ranks, or launchers without RANK)."""

    rank: int
    world_size: int

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        yield from islice(src, self.rank, None, self.world_size)


@dataclass(eq=False)
class ShuffledShardCycle(IterableDataset):
    """Training without resampling: each pass shuffles the shard list with a seed common to all
    ranks, takes this rank's and worker's share and repeats; an empty share yields nothing
    (instead of spinning forever)."""

    urls: list[str]
    seeds: EpochSeeds

    def __iter__(self) -> Iterator[dict[str, str]]:
        _, _, worker, num_workers = pytorch_worker_info()
        for cycle in range(1 << 62):
            urls = list(self.urls)
            random.Random(make_seed(self.seeds.seed, self.seeds.epoch, cycle)).shuffle(urls)
            share = urls[self.seeds.rank :: self.seeds.world_size][worker::num_workers]
            if not share:
                return
            for url in share:
                yield {"url": url}


# ----------------------------------------------------------------------------- stages


@dataclass
class ShardSamples:
    """{url} stream -> webdataset samples, checking each shard's count against the manifest."""

    policy: ErrorPolicy
    members: list[str] | None = None
    expected_counts: dict[str, int] | None = None

    def __call__(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in src:
            url = item["url"]
            count = 0
            try:
                for sample in iter_shard(url, members=self.members):
                    count += 1
                    yield sample
            except DataError as error:
                self.policy.handle(error)
                continue
            expected = None if self.expected_counts is None else self.expected_counts.get(url)
            if expected is not None and count != expected:
                self.policy.handle(
                    DataError(
                        f"shard has {count} samples, its manifest entry says {expected} (truncated?)",
                        path=url,
                    )
                )


@dataclass
class WorkerShuffle:
    """``wds.shuffle`` with a generator seeded per epoch, rank and worker at iteration time."""

    bufsize: int
    initial: int
    seeds: EpochSeeds

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        rng = random.Random(self.seeds.worker_seed(1))
        return wds.shuffle(self.bufsize, self.initial, rng=rng)(iter(src))


@dataclass
class DecodeAndPreprocess:
    """webdataset sample -> raw sample -> (optionally) model sample, errors named by shard and key."""

    policy: ErrorPolicy
    seeds: EpochSeeds
    modalities: tuple[str, ...] | None = None
    preprocess: Preprocess | None = None

    def __call__(self, src: Iterable[dict[str, Any]]) -> Iterator[Any]:
        rng = np.random.default_rng(self.seeds.worker_seed(2))
        for item in src:
            where = f"shard {item.get('__url__')}, sample {item.get('__key__')}"
            try:
                sample = decode_sample(item, modalities=self.modalities, where=where)
                yield sample if self.preprocess is None else self._preprocess(sample, rng, where)
            except DataError as error:
                self.policy.handle(error)

    def _preprocess(self, sample: Sample, rng: np.random.Generator, where: str) -> Any:
        try:
            return self.preprocess(sample, rng)  # type: ignore[misc]
        except DataError as error:
            raise DataError(f"{where}: preprocessing failed: {error}") from error


# ----------------------------------------------------------------------------- assembly


def default_preprocess(mode: Mode, modalities: Iterable[str] | None = None, seed: int = 0) -> Preprocess:
    """MAESTRO preprocessing for the given input modalities (default: the FLAIR-HUB inputs)."""
    config = build_preprocess_config(*(() if modalities is None else (list(modalities),)))
    return MaestroTransform(config, train=mode == "train", seed=seed)


def _default_collate(preprocess: Preprocess | None) -> Callable[[list[Any]], Any]:
    if preprocess is None:
        return list
    return collate_model_samples


def _world(config: LoaderConfig) -> tuple[int, int]:
    if config.world_size is not None:
        return config.rank, config.world_size  # type: ignore[return-value]
    rank, world_size, _, _ = pytorch_worker_info()
    return rank, world_size


@dataclass
class ShardDataset:
    """The assembled pipeline plus what the loader needs to know about it."""

    pipeline: wds.DataPipeline
    seeds: EpochSeeds
    source: ShardSource
    config: LoaderConfig
    batches_per_epoch: int | None = None
    policy: ErrorPolicy = field(default_factory=lambda: ErrorPolicy("raise"))
    """Skip counter of this process (workers count their own and log them)."""


def make_dataset(
    urls: str | Path | Sequence[str | Path],
    *,
    preprocess: Preprocess | None,
    mode: Mode = "train",
    config: LoaderConfig | None = None,
    **options: Any,
) -> ShardDataset:
    """webdataset pipeline over ``urls`` (see :func:`shards.reading.resolve_source`).

    ``preprocess=None`` streams raw samples (what the reader returns) instead of model samples.
    Options are :class:`LoaderConfig` fields (or pass a whole ``config``, which includes ``mode``).
    """
    if config is not None and options:
        raise ConfigError(f"give either config or options, not both (options: {sorted(options)})")
    config = config or LoaderConfig(mode=mode, **options)
    source = resolve_source(urls, config.split)
    rank, world_size = _world(config)
    seeds = EpochSeeds(config.seed, rank, world_size)
    policy = ErrorPolicy(config.on_error)
    members = None if config.modalities is None else [array_member(m) for m in config.modalities]
    stages: list[Any]
    if config.mode == "train":
        if config.resample:
            stages = [
                wds.ResampledShards(
                    source.urls, seed=config.seed, worker_seed=RankWorkerSeed(seeds), deterministic=True
                )
            ]
        else:
            if len(source.urls) < world_size:
                raise ConfigError(
                    f"{len(source.urls)} shards cannot feed {world_size} ranks without resampling; "
                    "use resample=True or more, smaller shards"
                )
            stages = [ShuffledShardCycle(source.urls, seeds)]
    else:
        slots = world_size * max(1, config.num_workers)
        if len(source.urls) < slots:
            log.info(
                "%d shards for %d rank x worker slots: some workers will be idle", len(source.urls), slots
            )
        stages = [wds.SimpleShardList(source.urls), SplitByRank(rank, world_size), wds.split_by_worker]
    stages.append(ShardSamples(policy, members, source.expected_counts))
    if config.mode == "train":
        stages.append(WorkerShuffle(config.shuffle_buffer, config.shuffle_initial, seeds))
    stages.append(DecodeAndPreprocess(policy, seeds, config.modalities, preprocess))
    if config.batch_size is not None:
        collate = config.collate_fn or _default_collate(preprocess)
        stages.append(wds.batched(config.batch_size, collation_fn=collate, partial=config.mode == "eval"))
    batches = None
    if config.mode == "train":
        batches = config.batches_per_epoch or _default_batches(source, world_size, config.batch_size)
    return ShardDataset(wds.DataPipeline(*stages), seeds, source, config, batches, policy)


def _default_batches(source: ShardSource, world_size: int, batch_size: int | None) -> int:
    if source.num_samples is None:
        raise ConfigError("batches_per_epoch is required when shards are not given through a manifest")
    return max(1, source.num_samples // (world_size * (batch_size or 1)))


PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process receives when its parent dies."""


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@dataclass
class DieWithParent:
    """``worker_init_fn`` of the shard loader: a worker dies with the process that started it,
    whatever kills that (the kernel's OOM killer, SIGKILL). torch's workers only check for a dead
    parent while they wait for work, and one blocked writing a batch into a pipe that its sibling
    workers also hold open never does: they outlived a killed trainer, holding GBs each. On Linux
    the kernel sends the worker SIGKILL (``PR_SET_PDEATHSIG``); elsewhere a thread polls the
    parent. ``then`` is the loader's previous ``worker_init_fn`` (Lightning's seeding), run after."""

    parent: int
    then: Callable[[int], None] | None = None

    def __call__(self, worker_id: int) -> None:
        if not (sys.platform.startswith("linux") and _set_parent_death_signal()):
            threading.Thread(target=_watch_parent, args=(self.parent,), daemon=True).start()
        if os.getppid() != self.parent:  # the parent died before the kernel could be told
            os._exit(1)
        if self.then is not None:
            self.then(worker_id)


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _as_is(item: Any) -> Any:
    """Batches are collated in the workers; keep DataLoader from converting raw numpy samples."""
    return item


class ShardLoader(wds.WebLoader):
    """``wds.WebLoader`` (a DataLoader with batching done in the workers) that knows its epoch.

    Each ``iter()`` starts a new epoch (re-seeding shard draws, shuffling and preprocessing);
    :meth:`set_epoch` pins it, e.g. when resuming. In training ``len()`` is the exact number of
    batches per rank per epoch.
    """

    def __init__(self, dataset: ShardDataset):
        config = dataset.config
        kwargs: dict[str, Any] = {
            "batch_size": None,
            "num_workers": config.num_workers,
            "pin_memory": config.pin_memory,
            "collate_fn": _as_is,
        }
        if config.num_workers > 0 and config.prefetch_factor is not None:
            kwargs["prefetch_factor"] = config.prefetch_factor
        if not any(isinstance(stage, ForwardWorkerErrors) for stage in dataset.pipeline.pipeline):
            dataset.pipeline.append(ForwardWorkerErrors())
        super().__init__(dataset.pipeline, **kwargs)
        self.shards = dataset
        self._epoch = 0
        self._current_epoch = 0
        self._yielded = 0
        self._skip = 0
        if dataset.batches_per_epoch is not None:
            self.with_epoch(dataset.batches_per_epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will stream."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._skip = 0
        self._epoch = epoch

    # Lightning saves these in checkpoints (``_Stateful`` loaders) and restores them before the
    # resumed epoch's iterator is created: the stream is a pure function of (seed, epoch, rank,
    # worker), so skipping the batches already consumed reproduces the uninterrupted run exactly.
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._current_epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, yielded = int(state["epoch"]), int(state["batches_yielded"])
        finished = self.shards.batches_per_epoch is not None and yielded >= self.shards.batches_per_epoch
        # A checkpoint taken after an epoch's last batch resumes at the start of the next epoch.
        self._epoch, self._skip = (epoch + 1, 0) if finished else (epoch, yielded)

    def __len__(self) -> int:
        if self.shards.batches_per_epoch is None:
            raise TypeError("an evaluation loader has no fixed length")
        return self.shards.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        # A generator: nothing below runs before the first next(), so an iterator that a caller
        # creates and drops (Lightning does) neither starts workers nor advances the epoch, and
        # set_epoch() calls made in epoch-start hooks still apply.
        epoch, skip = self._epoch, self._skip
        self._epoch, self._skip = epoch + 1, 0
        self._current_epoch, self._yielded = epoch, 0
        self.shards.seeds.epoch = epoch
        for stage in self.shards.pipeline.pipeline:
            if isinstance(stage, wds.ResampledShards):
                # its own per-process iteration counter would make the draws depend on how often this
                # process iterated (num_workers=0) rather than on the epoch: the epoch is in our seed
                stage.epoch = -1
        if skip:
            log.info("resuming epoch %d: skipping the %d batches already trained on", epoch, skip)
        # Set here, where the workers are started: the process iterating is their parent.
        torch_loader = next(stage for stage in self.pipeline if isinstance(stage, DataLoader))
        init = torch_loader.worker_init_fn
        torch_loader.worker_init_fn = DieWithParent(
            os.getpid(), init.then if isinstance(init, DieWithParent) else init
        )
        for batch in super().__iter__():
            if isinstance(batch, WorkerDataError):
                raise batch.error()
            self._yielded += 1
            if self._yielded > skip:
                yield batch


def make_loader(
    urls: str | Path | Sequence[str | Path],
    *,
    preprocess: Preprocess | None,
    mode: Mode = "train",
    config: LoaderConfig | None = None,
    **options: Any,
) -> ShardLoader:
    """DataLoader over shards (see the module docstring); options are :class:`LoaderConfig` fields."""
    return ShardLoader(make_dataset(urls, preprocess=preprocess, mode=mode, config=config, **options))
