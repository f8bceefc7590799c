"""Shards -> model-sample batches for any stage: a training stream and exactly-once validation.

Local shards are checked against their manifest before the first batch (``data.verify``): a
truncated shard drawn only in epoch 4 would otherwise crash a long run there, or never be drawn in a
short one and pass unnoticed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator

from maestro.data.preprocess import MaestroTransform, PreprocessConfig, build_preprocess_config, scale_batch
from maestro.errors import DataError
from maestro.modalities import with_companions
from maestro.models.config import ModalitySpec
from maestro.training.config import DataConfig
from maestro.training.transfer import tensors_to_device
from shards.loader import ShardLoader, make_loader
from shards.manifest import read_manifest
from shards.reading import local_manifest
from shards.verify import verify_shard

log = logging.getLogger(__name__)

MAX_LISTED = 5
"""Bad shards named in the error; ``shards verify`` lists them all."""


def preprocess_for(specs: Mapping[str, ModalitySpec], **options: Any) -> PreprocessConfig:
    """Bands and date counts the model expects: the model config is the single source of truth.

    ``specs`` are a model config's resolved modalities; ``options`` are other
    :class:`PreprocessConfig` fields (cloud avoidance, reference modality, ...).
    """
    overrides = {key: {"bands": spec.bands, "num_dates": spec.num_dates} for key, spec in specs.items()}
    return build_preprocess_config(list(specs), overrides, **options)


def check_shards(
    urls: str, split: str | None, verify: str, *, name: str = "data", rank: int = 0, world_size: int = 1
) -> list[str]:
    """Problems of the local shards ``urls`` names, against its manifest: presence and size
    (``verify='size'``, every rank checks every shard) or also sha256 (``'full'``, each rank reads
    its share). Shards without a local manifest (brace patterns, URLs) have nothing to be compared
    with before they are read: the reader then names a truncated tar when it reaches it, and one
    cut at a sample boundary only if a manifest gives the expected counts."""
    if verify == "none":
        return []
    file = local_manifest(urls)
    if file is None:
        if rank == 0:
            log.info("%s=%s has no local manifest: shards are not checked before reading", name, urls)
        return []
    entry = read_manifest(file).split(split)
    full = verify == "full"
    records = entry.shards[rank::world_size] if full else entry.shards
    if full and rank == 0:
        log.info(
            "%s: checksumming %d of %d shards (%.1f GB) on each of %d ranks",
            name,
            len(records),
            len(entry.shards),
            sum(r.bytes for r in records) / 1e9,
            world_size,
        )
    problems = []
    for record in records:
        report = verify_shard(
            file.parent / record.name, entry.split, record, entry.modalities, decode=False, checksum=full
        )
        problems.extend(f"{file.parent / record.name}: {problem}" for problem in report.problems)
    if not problems and rank == 0:
        log.info(
            "%s: %d %s shards match %s (%s)",
            name,
            len(entry.shards),
            entry.split,
            file,
            "sha256" if full else "sizes; data.verify=full also compares checksums",
        )
    return problems


def padding_on_host(batch: Mapping[str, Any]) -> bool | None:
    """Whether any date of a model-sample batch is padding, read while the masks are still on the
    host (before the transfer): the model then needs no device sync to know (None: unknown)."""
    valid = batch.get("valid") if isinstance(batch, Mapping) else None
    if not valid or any(v.device.type != "cpu" for v in valid.values()):
        return None
    return not all(bool(v.all()) for v in valid.values())


class ShardDataModule(L.LightningDataModule):
    """Training stream (resampled, fixed batches per rank) and exactly-once validation.

    ``members`` are the raw shard members to decode; default: the preprocessed inputs and their
    companion masks (cloud avoidance reads ``s2_mask``). A stage that trains on labels adds
    their keys.
    """

    def __init__(
        self,
        data: DataConfig,
        preprocess: PreprocessConfig,
        members: Sequence[str] | None = None,
        seed: int = 0,
        wrap: Callable[[MaestroTransform], Callable[..., Any]] | None = None,
    ):
        super().__init__()
        self.data = data
        self.preprocess_config = preprocess
        self.members = (
            tuple(members) if members is not None else tuple(with_companions(preprocess.modalities))
        )
        self.seed = seed
        self.wrap = wrap
        """Optional wrapper around each loader's transform (e.g. label checks in the workers)."""

    def setup(self, stage: str) -> None:
        """Refuse bad local shards of the stage's splits before any batch is read (``data.verify``)."""
        sources = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ())
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        problems = []
        for split_name in sources:
            urls = getattr(self.data, split_name)
            if urls is not None:
                problems += check_shards(
                    urls,
                    getattr(self.data, f"{split_name}_split"),
                    self.data.verify,
                    name=f"data.{split_name}",
                    rank=rank,
                    world_size=world,
                )
        # With verify=full each rank checked its own share: all ranks stop together.
        agreed = world == 1 or self.trainer.strategy.reduce_boolean_decision(not problems, all=True)
        if not agreed and not problems:
            problems = ["another rank found bad shards (see its log)"]
        if problems:
            listed = "; ".join(problems[:MAX_LISTED]) + (
                f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
            )
            raise DataError(
                f"shards do not match their manifest: {listed}. Rebuild or copy them again; "
                "`shards verify DIR` lists every problem"
            )

    @property
    def on_gpu(self) -> bool:
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return tensors_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Note whether any date is padding while the masks are on the host: the models skip a
        device sync (and a graph break when compiled) with ``padded`` known."""
        if isinstance(batch, dict) and "valid" in batch:
            batch["padded"] = padding_on_host(batch)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Scale the inputs that travelled in their on-disk integer dtype, on the device. Only GPU
        runs ship them so (4x fewer bytes for aerial, 2x for S2 through workers, shared memory and
        PCIe); on CPU the workers scale in parallel, which is faster than scaling here."""
        if isinstance(batch, dict) and "inputs" in batch:
            scale_batch(batch, self.preprocess_config)
        return batch

    def _loader(self, urls: str, mode: str, **options: Any) -> ShardLoader:
        rank = self.trainer.global_rank if self.trainer is not None else None
        world = self.trainer.world_size if self.trainer is not None else None
        preprocess = dataclasses.replace(self.preprocess_config, scale_on_device=self.on_gpu)
        transform = MaestroTransform(preprocess, train=mode == "train", seed=self.seed)
        return make_loader(
            urls,
            preprocess=self.wrap(transform) if self.wrap is not None else transform,
            mode=mode,
            batch_size=self.data.batch_size,
            num_workers=self.data.num_workers,
            seed=self.seed,
            rank=rank,
            world_size=world,
            modalities=self.members,
            pin_memory=self.on_gpu and self.data.pin_memory is not False,
            **options,
        )

    def train_dataloader(self) -> ShardLoader:
        return self._loader(
            self.data.train,
            "train",
            split=self.data.train_split,
            batches_per_epoch=self.data.batches_per_epoch,
            shuffle_buffer=self.data.shuffle_buffer,
        )

    def val_dataloader(self) -> ShardLoader | list:
        if self.data.val is None:
            return []
        return self._loader(self.data.val, "eval", split=self.data.val_split)

    def test_dataloader(self) -> ShardLoader | list:
        if self.data.test is None:
            return []
        return self._loader(self.data.test, "eval", split=self.data.test_split)
