"""Cloud-removal run configuration: the pretrained MAE to start from, what is filled, how it is trained.

The ``model`` section says which network a run trains (:class:`GapFillModelConfig`, resolved into
a :class:`~maestro.models.gapfill_config.GapFillConfig` from the pretrained MAE); data, optim and
trainer are the shared sections. Defaults run on the built-in example's outputs (``make example``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maestro.errors import ConfigError
from maestro.models.config import MAEConfig
from maestro.models.finetuning import EXAMPLE_PRETRAIN_RUN
from maestro.models.gapfill_config import GapFillConfig
from maestro.training.config import DataConfig, OptimConfig, TrainerConfig

EXAMPLE_SHARDS = "example/shards"


@dataclass(frozen=True)
class GapFillModelConfig:
    """The pretrained MAE and what the run teaches it to restore."""

    init: str = EXAMPLE_PRETRAIN_RUN
    """A ``pretrain`` run or checkpoint, or an MAE model folder / Hub model (EMA weights of a run)."""
    mae: MAEConfig | None = None
    """Filled from ``init`` (a run's own config keeps it, so a resumed or tested run needs no init)."""
    target: str = "s2"
    cloud_threshold: float = 0.0
    """Mask probability (0-100) above which a pixel is cloudy: filled, never a target."""
    held_out_fraction: float = 0.3
    """Share of each sample's clear dates with pixels hidden and restored in a training step (at
    least one date): the whole date or a cloud-like rectangle (:func:`maestro.models.gapfill.hold_out`)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError(f"held_out_fraction: {self.held_out_fraction} must be in (0, 1)")
        if self.mae is not None:
            self.network()  # noqa: B018 (a target the MAE lacks, a bad threshold: ConfigError now)

    def network(self) -> GapFillConfig:
        """The network this section describes (``mae`` resolved from ``init``), checked by its config."""
        if self.mae is None:
            raise ConfigError("model.mae must be resolved from model.init before building the network")
        return GapFillConfig(mae=self.mae, target=self.target, cloud_threshold=self.cloud_threshold)


@dataclass(frozen=True)
class GapFillEvalConfig:
    held_out_fraction: float = 0.3
    """Share of each test sample's clear dates with pixels hidden and scored (drawn per patch id)."""
    num_figures: int = 4
    """Test samples drawn (dates with clouds, restored, truth) and in the NDVI figure."""

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError(f"held_out_fraction: {self.held_out_fraction} must be in (0, 1)")
        if self.num_figures < 0:
            raise ConfigError(f"num_figures: {self.num_figures} must be >= 0")


@dataclass(frozen=True)
class GapFillTrainerConfig(TrainerConfig):
    output_dir: Path = Path("runs/gapfill")
    max_epochs: int = 20


def _example_data() -> DataConfig:
    return DataConfig(train=EXAMPLE_SHARDS, val=EXAMPLE_SHARDS, test=EXAMPLE_SHARDS)


def _gapfill_optim() -> OptimConfig:
    return OptimConfig(base_lr=1e-4)


@dataclass(frozen=True)
class GapFillRunConfig:
    data: DataConfig = field(default_factory=_example_data)
    model: GapFillModelConfig = field(default_factory=GapFillModelConfig)
    optim: OptimConfig = field(default_factory=_gapfill_optim)
    trainer: GapFillTrainerConfig = field(default_factory=GapFillTrainerConfig)
    eval: GapFillEvalConfig = field(default_factory=GapFillEvalConfig)
