"""Shards -> model-sample batches for any stage: a training stream and exactly-once validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator

from maestro.data.preprocess import MaestroTransform, PreprocessConfig, build_preprocess_config
from maestro.modalities import with_companions
from maestro.models.config import ModalitySpec
from maestro.training.config import DataConfig
from shards.loader import ShardLoader, make_loader


def preprocess_for(specs: Mapping[str, ModalitySpec], **options: Any) -> PreprocessConfig:
    """Bands and date counts the model expects: the model config is the single source of truth.

    ``specs`` are a model config's resolved modalities; ``options`` are other
    :class:`PreprocessConfig` fields (cloud avoidance, reference modality, ...).
    """
    overrides = {key: {"bands": spec.bands, "num_dates": spec.num_dates} for key, spec in specs.items()}
    return build_preprocess_config(list(specs), overrides, **options)


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
        self.members = tuple(members) if members is not None else tuple(with_companions(preprocess.modalities))
        self.seed = seed
        self.wrap = wrap
        """Optional wrapper around each loader's transform (e.g. label checks in the workers)."""

    def _loader(self, urls: str, mode: str, **options: Any) -> ShardLoader:
        rank = self.trainer.global_rank if self.trainer is not None else None
        world = self.trainer.world_size if self.trainer is not None else None
        transform = MaestroTransform(self.preprocess_config, train=mode == "train", seed=self.seed)
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
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            **options,
        )

    def train_dataloader(self) -> ShardLoader:
        return self._loader(
            self.data.train,
            "train",
            split=self.data.train_split,
            batches_per_epoch=self.data.batches_per_epoch,
            shuffle_buffer=self.data.shuffle_buffer,
            shuffle_initial=min(self.data.shuffle_buffer, 16),
        )

    def val_dataloader(self) -> ShardLoader | list:
        if self.data.val is None:
            return []
        return self._loader(self.data.val, "eval", split=self.data.val_split)

    def test_dataloader(self) -> ShardLoader | list:
        if self.data.test is None:
            return []
        return self._loader(self.data.test, "eval", split=self.data.test_split)
