"""Fine-tuning run configuration: task, model (init, head, probe), evaluation, and the shared sections.

The ``task`` and ``model`` sections are :mod:`maestro.models.finetuning`'s: they say which network a
run trains, which the library reads back from a run (``maestro publish``, ``predict --model``).

The defaults run on the built-in example's outputs (``example/shards`` and the pretraining run in
``example/runs/pretrain``), so ``finetune --task lpis --level 2`` works after ``make example``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maestro.errors import ConfigError
from maestro.models.finetuning import ARCHITECTURES, EXAMPLE_PRETRAIN_RUN, ModelConfig, TaskConfig
from maestro.training.config import DataConfig, OptimConfig, TrainerConfig

__all__ = [  # the task and model sections define the network: they live with the models
    "ARCHITECTURES",
    "DatasetConfig",
    "EXAMPLE_PRETRAIN_RUN",
    "EXAMPLE_SHARDS",
    "EvalConfig",
    "FinetuneConfig",
    "FinetuneTrainerConfig",
    "ModelConfig",
    "TaskConfig",
]

EXAMPLE_SHARDS = "example/shards"


@dataclass(frozen=True)
class EvalConfig:
    """What the test of the best checkpoint writes, and how it treats missing inputs."""

    missing_modalities: tuple[str, ...] = ()
    """Evaluate without these inputs (they are not read; the model sees them as having no valid
    date). Shows how a model copes when a sensor is unavailable."""
    save_predictions: bool = False
    """Write one georeferenced prediction GeoTIFF per test patch (the label's CRS and transform)."""
    num_figures: int = 4
    """Samples drawn in the input / label / prediction figure."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing_modalities", tuple(self.missing_modalities))
        if self.num_figures < 0:
            raise ConfigError(f"num_figures: {self.num_figures} must be >= 0")


@dataclass(frozen=True)
class DatasetConfig:
    """Your own dataset (``finetune --data-config``), read from its GeoTIFFs rather than from shards."""

    config: Path | None = None
    """Its data config YAML (README, "Your own dataset"): its shards are built (or brought up to
    date) under ``{run}/shards`` before training and every ``data`` split reads them; the task is
    ``custom``, with the classes of its nomenclature YAML."""
    skip_bad: bool = False
    """Skip the patches its reader rejects (counted, logged and listed in the shards' manifest)
    instead of stopping at the first."""

    def __post_init__(self) -> None:
        if self.config is not None:
            object.__setattr__(self, "config", Path(self.config))
        elif self.skip_bad:
            raise ConfigError("skip_bad: applies to a dataset read from its data config (dataset.config)")


@dataclass(frozen=True)
class FinetuneTrainerConfig(TrainerConfig):
    output_dir: Path = Path("runs/finetune")
    max_epochs: int = 50


def _example_data() -> DataConfig:
    return DataConfig(train=EXAMPLE_SHARDS, val=EXAMPLE_SHARDS, test=EXAMPLE_SHARDS)


def _finetune_optim() -> OptimConfig:
    return OptimConfig(base_lr=1e-5, end_fraction=0.5)


@dataclass(frozen=True)
class FinetuneConfig:
    data: DataConfig = field(default_factory=_example_data)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=_finetune_optim)
    """Fine-tuning recipe: base lr 1e-5, one-cycle down to lr / 2."""
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    def __post_init__(self) -> None:
        if self.dataset.config is not None and self.task.name != "custom":
            raise ConfigError(
                f"dataset.config reads your own dataset, whose task is custom, not {self.task.name!r}"
            )
        if self.model.encoder is not None or self.model.modalities is not None:
            unknown = sorted(set(self.eval.missing_modalities) - set(self.inputs))
            if unknown:
                raise ConfigError(
                    f"eval.missing_modalities {unknown} are not inputs of the model {list(self.inputs)}"
                )

    @property
    def inputs(self) -> tuple[str, ...]:
        """The modalities the fine-tuned model takes: ``model.modalities``, else those of the
        encoder (which then needs to be resolved)."""
        if self.model.modalities is not None:
            return self.model.modalities
        if self.model.encoder is None:
            raise ConfigError("the encoder is not resolved yet (model.encoder is taken from model.init)")
        return self.model.encoder.modalities
