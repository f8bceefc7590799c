"""Fine-tuning run configuration: task, model (init, head, probe), evaluation, and the shared sections.

The defaults run on the built-in example's outputs (``example/shards`` and the pretraining run in
``example/runs/pretrain``), so ``finetune --task lpis --level 2`` works after ``make example``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from maestro.errors import ConfigError
from maestro.modalities import resolve as resolve_modalities
from maestro.models.baseline.config import BaselineOptions
from maestro.models.config import EncoderConfig
from maestro.models.heads.options import DatePooling
from maestro.models.heads.registry import HEADS
from maestro.tasks import LabelTarget, get_task
from maestro.training.config import DataConfig, OptimConfig, TrainerConfig

EXAMPLE_SHARDS = "example/shards"
EXAMPLE_PRETRAIN_RUN = "example/runs/pretrain"
ARCHITECTURES = ("maestro", "swin-utae")


@dataclass(frozen=True)
class TaskConfig:
    """What is predicted: a task of :data:`maestro.tasks.TASKS` and its nomenclature level."""

    name: str = "lc"
    """``lc`` (land cover) or ``lpis`` (crop type)."""
    level: int = 1
    """Nomenclature level: 1 for lc; 1, 2 or 3 for lpis."""

    def __post_init__(self) -> None:
        self.target  # noqa: B018  (unknown task or level: ConfigError now)

    @property
    def target(self) -> LabelTarget:
        return get_task(self.name).target(self.level)


@dataclass(frozen=True)
class ModelConfig:
    """The pretrained encoder to start from, the inputs to use and the head to train on top."""

    init: str = EXAMPLE_PRETRAIN_RUN
    """``random``; a ``pretrain`` checkpoint (``.ckpt``) or run directory (its newest checkpoint);
    a folder with ``config.json`` + ``model.safetensors``; or ``hf:org/name[@revision]``."""
    weights: Literal["ema", "model"] = "ema"
    """Which weights of a training checkpoint to start from (EMA when the checkpoint has them)."""
    encoder: EncoderConfig | None = None
    """The encoder to build; None takes it from ``init`` (required with ``init: random``)."""
    modalities: tuple[str, ...] | None = None
    """Inputs to fine-tune on, a subset of the encoder's (None: all of them)."""
    head: str = "uperfuse"
    """``uperfuse``, ``maestro`` or ``linear`` (the linear probe's one linear layer on the mean of
    each input's final tokens; ``--probe`` selects it): :data:`~maestro.models.heads.registry.HEADS`."""
    feature_indices: tuple[int, ...] | None = None
    """Encoder blocks the uperfuse head reads (None: 4 evenly spaced, ending at the last)."""
    date_pooling: DatePooling = "attentive"
    decoder_channels: int = 256
    aux_heads: bool = False
    """One auxiliary classifier per modality, trained with its own loss (weight ``aux_weight``)."""
    aux_weight: float = 0.5
    """beta: loss = main + beta x mean of the per-modality auxiliary losses."""
    modality_dropout: float = 0.0
    """Training only: probability that a sample loses all dates of a modality."""
    probe: bool = False
    """Freeze the encoder (no gradients, eval mode): only the head trains. With ``head: linear``
    (what ``finetune --probe`` sets unless ``--head`` names another) this is the linear probe."""
    architecture: Literal["maestro", "swin-utae"] = "maestro"
    """``swin-utae``: the supervised baseline (:mod:`maestro.models.baseline`) on the same data,
    metrics and outputs; it reads ``modalities`` / ``encoder`` (inputs only), ``pretrained``,
    ``baseline``, ``aux_heads``, ``aux_weight`` and ``modality_dropout``, not the MAESTRO fields."""
    pretrained: bool = True
    """swin-utae: start the Swins from ImageNet weights (timm; an error when they cannot be fetched)."""
    baseline: BaselineOptions = field(default_factory=BaselineOptions)
    """swin-utae: Swin, U-TAE and decoder settings, and the Sentinel-2 cloudy-date filter."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head: unknown head {self.head!r}; heads are {sorted(HEADS)}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture: {self.architecture!r} is not one of {list(ARCHITECTURES)}")
        if self.architecture == "swin-utae" and self.probe:
            raise ConfigError(
                "probe: a linear probe applies to a pretrained MAESTRO encoder, not to swin-utae"
            )
        if self.init == "random" and self.encoder is None and self.architecture == "maestro":
            raise ConfigError(
                "init: random needs an encoder section (model.encoder) to build the encoder from"
            )
        if self.modalities is not None:
            if not self.modalities:
                raise ConfigError("modalities: at least one input modality is required")
            try:
                resolve_modalities(self.modalities)
            except ConfigError as error:  # unknown or listed twice
                raise ConfigError(f"modalities: {error.args[0]}") from None
            object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.aux_weight < 0:
            raise ConfigError(f"aux_weight: {self.aux_weight} must be >= 0")


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

    def __post_init__(self) -> None:
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
