"""Pretraining run configuration (YAML + dotted overrides), validated before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maestro.models.config import MAEConfig
from maestro.training.config import DataConfig, OptimConfig, TrainerConfig


@dataclass(frozen=True)
class PretrainTrainerConfig(TrainerConfig):
    """The shared trainer settings plus the reconstruction images of masked pretraining."""

    output_dir: Path = Path("runs/pretrain")
    """Checkpoints, logs, reconstructions and the resolved config are written here only."""
    reconstruction_every_n_steps: int = 500
    """0 disables reconstruction images."""


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig
    model: MAEConfig = field(default_factory=MAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: PretrainTrainerConfig = field(default_factory=PretrainTrainerConfig)
