"""The pretraining run itself: shards, the MAE task and the trainer (``pretrain.cli`` parses and checks)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L

from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import run_stage
from pretrain.callbacks import ReconstructionImages
from pretrain.config import PretrainConfig
from pretrain.module import MaestroPretrainModule


def run(config: PretrainConfig, resume: str | None = None, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Train; ``resume`` is a checkpoint path, or ``"last"`` for the run's newest checkpoint."""
    data = ShardDataModule(config.data, preprocess_for(config.model.encoder.specs), seed=config.trainer.seed)
    if config.trainer.reconstruction_every_n_steps > 0:
        callbacks = [ReconstructionImages(config.trainer.output_dir), *callbacks]
    return run_stage(config, MaestroPretrainModule, data, callbacks, resume=resume)
