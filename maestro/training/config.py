"""Config sections every training stage shares: the shards it reads, the optimiser and schedule
(built by :mod:`maestro.training.optim`) and how Lightning runs it.

Each section checks its own values when built and raises :class:`~maestro.errors.ConfigError`
without its own key path (the loader names the section), so a bad value fails before any data
is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from maestro.errors import ConfigError

MAX_DEFAULT_WORKERS = 4
FP8 = "fp8"
"""``trainer.precision`` value for FP8 training (:mod:`maestro.training.fp8`): torchao's float8
matrix products in the transformer blocks, bf16-mixed autocast around them."""
FP8_MULTIPLE = 16
"""Both dimensions of an FP8 matrix product's weight must be multiples of this (``torch._scaled_mm``)."""


def default_num_workers() -> int:
    """The CPU cores this process may use, at most :data:`MAX_DEFAULT_WORKERS`: more loader
    workers than cores only compete for them (and torch warns at every loader start)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


@dataclass(frozen=True)
class DataConfig:
    train: str
    """Training shards: a shard directory (with manifest.json), a brace pattern, or a URL."""
    val: str | None = None
    """Validation shards (evaluation mode: every sample exactly once per validation)."""
    test: str | None = None
    """Test shards (stages that evaluate a final model, e.g. fine-tuning)."""
    train_split: str = "train"
    """Split read from a manifest that holds several (``shards build --split train val``)."""
    val_split: str = "val"
    test_split: str = "test"
    batch_size: int = 32
    """Per device."""
    num_workers: int = field(default_factory=default_num_workers)
    """Loader processes per device; default: the CPU cores this process may use, at most 4."""
    pin_memory: bool | None = None
    """Copy each batch into page-locked memory in a loader thread, so that the copy to the GPU runs
    asynchronously. None: on when training on GPUs. Off, the copy to the GPU reads the batch where
    the workers left it (no extra host copy, but the transfer blocks the training loop)."""
    batches_per_epoch: int | None = None
    """Per rank; default: training samples in the manifest / global batch (at least 1)."""
    shuffle_buffer: int = 256
    val_batches: int | None = None
    """Cap on validation batches per rank (None: the whole validation split)."""
    verify: Literal["size", "full", "none"] = "size"
    """Check local shards against their manifest before training: ``size`` (file sizes, instant),
    ``full`` (sha256 of every byte, split across ranks) or ``none``."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ConfigError("batches_per_epoch must be >= 1")


@dataclass(frozen=True)
class TrainerConfig:
    output_dir: Path = Path("runs")
    """Checkpoints, logs and the resolved config are written here only."""
    max_epochs: int = 100
    max_steps: int = -1
    """-1: run max_epochs; otherwise stop after this many optimizer steps."""
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    precision: str | None = None
    """None: bf16-mixed on GPU, 32-true on CPU. Any Lightning precision, or ``fp8``: FP8 matrix
    products in the transformer blocks' large linear layers on top of bf16-mixed (GPUs of compute
    capability 8.9 or newer; :mod:`maestro.training.fp8`)."""
    fp8_min_features: int = 512
    """With ``precision: fp8``: smallest ``in_features`` and ``out_features`` of a block linear layer
    converted to FP8 (a multiple of ``FP8_MULTIPLE``). Below it the casts cost more than the faster product saves."""
    gradient_clip: float | None = None
    accumulate_grad_batches: int = 1
    ema_decay: float = 0.9999
    """0 disables the EMA copy."""
    checkpoint_every_n_steps: int = 500
    keep_checkpoints: int = 3
    """Newest step/epoch-end checkpoints kept (each holds weights, optimizer and EMA state);
    ``last.ckpt`` links to the newest."""
    monitor: str | None = None
    """Also keep ``checkpoints/best.ckpt``, the best value of this logged metric (e.g. ``val/loss``)."""
    monitor_mode: Literal["min", "max"] = "min"
    log_every_n_steps: int = 10
    val_every_n_epochs: int = 1
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    profile_steps: tuple[int, int] | None = None
    """Record optimizer steps [start, stop) with ``torch.profiler`` on every rank, into
    ``<output_dir>/profile/`` (timeline, operators by device time, how busy the device was).
    Pick steps past compilation and loader warm-up, e.g. ``[200, 205]``."""

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError("max_epochs must be >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError("max_steps must be -1 or >= 1")
        if self.num_nodes < 1:
            raise ConfigError("num_nodes must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay must be in [0, 1)")
        if self.checkpoint_every_n_steps < 1:
            raise ConfigError("checkpoint_every_n_steps must be >= 1")
        if self.fp8_min_features < FP8_MULTIPLE or self.fp8_min_features % FP8_MULTIPLE:
            raise ConfigError(
                f"fp8_min_features must be a positive multiple of {FP8_MULTIPLE}, got {self.fp8_min_features}"
            )
        if self.keep_checkpoints < 1:
            raise ConfigError("keep_checkpoints must be >= 1 (the newest is needed to resume)")
        if self.profile_steps is not None and not 0 <= self.profile_steps[0] < self.profile_steps[1]:
            raise ConfigError(
                f"profile_steps must be [start, stop) with 0 <= start < stop, got {list(self.profile_steps)}"
            )
        if (
            isinstance(self.devices, str)
            and self.devices != "auto"
            and not self.devices.replace(",", "").isdigit()
        ):
            raise ConfigError(
                f"devices must be 'auto', an integer or a list like '0,1'; got {self.devices!r}"
            )


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` section: AdamW + OneCycle, built by :func:`maestro.training.optim.build_optimizer`."""

    base_lr: float = 3e-5
    """Learning rate for a global batch of 3; scaled by sqrt(global_batch / 3)."""
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_fraction: float = 0.2
    start_div: float = 1000.0
    """Warm-up starts at lr / start_div."""
    end_fraction: float = 0.0
    """Final lr as a fraction of the peak: ~0 for pretraining and probing, 0.5 for fine-tuning."""
    layer_decay: float = 1.0
    """Layer-wise lr decay: a parameter ``k`` layers below the top gets lr x layer_decay**k
    (models that define ``layer_id(name)`` and ``num_layers``); 1 turns it off."""

    def __post_init__(self) -> None:
        if self.base_lr <= 0:
            raise ConfigError("base_lr must be > 0")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise ConfigError("warmup_fraction must be in (0, 1)")
        if not 0.0 <= self.end_fraction < 1.0:
            raise ConfigError("end_fraction must be in [0, 1)")
        if self.start_div < 1:
            raise ConfigError("start_div must be >= 1")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError("layer_decay must be in (0, 1]")

    def peak_lr(self, global_batch: int) -> float:
        return self.base_lr * math.sqrt(global_batch / 3)


class StageConfig(Protocol):
    """What the shared trainer reads from a stage's config; the stage adds its model and task."""

    @property
    def data(self) -> DataConfig: ...

    @property
    def optim(self) -> OptimConfig: ...

    @property
    def trainer(self) -> TrainerConfig: ...
