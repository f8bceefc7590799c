"""Shards -> model-sample batches for pretraining, driven by the model config."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator

from maestro.data.transforms import MaestroTransform, build_preprocess_config
from maestro.modalities import with_companions
from maestro.models.config import MaestroConfig
from pretrain.config import DataConfig
from shards.loader import ShardLoader, make_loader


def preprocess_overrides(model: MaestroConfig) -> dict[str, dict[str, Any]]:
    """Bands and date counts the model expects: the model config is the single source of truth."""
    return {key: {"bands": spec.bands, "num_dates": spec.num_dates} for key, spec in model.specs.items()}


class ShardDataModule(L.LightningDataModule):
    """Training stream (resampled, fixed batches per rank) and exactly-once validation."""

    def __init__(self, data: DataConfig, model: MaestroConfig, seed: int = 0):
        super().__init__()
        self.data = data
        self.model = model
        self.seed = seed
        self.preprocess_config = build_preprocess_config(list(model.modalities), preprocess_overrides(model))
        # Raw members to decode: inputs plus their masks (cloud avoidance reads s2_mask).
        self.members = tuple(with_companions(model.modalities))

    def _loader(self, urls: str, mode: str, **options: Any) -> ShardLoader:
        rank = self.trainer.global_rank if self.trainer is not None else None
        world = self.trainer.world_size if self.trainer is not None else None
        return make_loader(
            urls,
            preprocess=MaestroTransform(self.preprocess_config, train=mode == "train", seed=self.seed),
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
