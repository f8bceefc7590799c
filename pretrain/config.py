"""Pretraining run configuration (YAML + dotted overrides), validated before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maestro.training.optim import OptimConfig


@dataclass(frozen=True)
class DataConfig:
    train: str
    """Training shards: a shard directory (with manifest.json), a brace pattern, or a URL."""
    val: str | None = None
    """Validation shards (evaluation mode: every sample exactly once per validation)."""
    train_split: str = "train"
    """Split read from a manifest that holds several (``shards build --split train val``)."""
    val_split: str = "val"
    batch_size: int = 32
    """Per device."""
    num_workers: int = 4
    batches_per_epoch: int | None = None
    """Per rank; default: training samples in the manifest / global batch (at least 1)."""
    shuffle_buffer: int = 256
    val_batches: int | None = None
    """Cap on validation batches per rank (None: the whole validation split)."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError("data.batch_size must be >= 1")
        if self.num_workers < 0:
            raise ValueError("data.num_workers must be >= 0")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ValueError("data.batches_per_epoch must be >= 1")


@dataclass(frozen=True)
class TrainerConfig:
    output_dir: Path = Path("runs/pretrain")
    """Checkpoints, logs, reconstructions and the resolved config are written here only."""
    max_epochs: int = 100
    max_steps: int = -1
    """-1: run max_epochs; otherwise stop after this many optimizer steps."""
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    precision: str | None = None
    """None: bf16-mixed on GPU, 32-true on CPU."""
    gradient_clip: float | None = None
    accumulate_grad_batches: int = 1
    ema_decay: float = 0.9999
    """0 disables the EMA copy."""
    checkpoint_every_n_steps: int = 500
    log_every_n_steps: int = 10
    reconstruction_every_n_steps: int = 500
    """0 disables reconstruction images."""
    val_every_n_epochs: int = 1
    compile: bool = False
    seed: int = 0
    deterministic: bool = False

    def validate(self) -> None:
        if self.max_epochs < 1:
            raise ValueError("trainer.max_epochs must be >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("trainer.max_steps must be -1 or >= 1")
        if self.num_nodes < 1:
            raise ValueError("trainer.num_nodes must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("trainer.ema_decay must be in [0, 1)")
        if self.checkpoint_every_n_steps < 1:
            raise ValueError("trainer.checkpoint_every_n_steps must be >= 1")
        if isinstance(self.devices, str) and self.devices != "auto" and not self.devices.replace(",", "").isdigit():
            raise ValueError(f"trainer.devices must be 'auto', an integer or a list like '0,1'; got {self.devices!r}")


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig
    model: dict[str, Any] = field(default_factory=dict)
    """A :class:`maestro.models.config.MaestroConfig` mapping; validated by it at load time."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self) -> None:
        # Resolve the model config now so that its typos fail before any data is touched.
        from maestro.models.config import MaestroConfig

        MaestroConfig.from_dict(self.model)

    @property
    def model_config(self):  # -> MaestroConfig
        from maestro.models.config import MaestroConfig

        return MaestroConfig.from_dict(self.model)
