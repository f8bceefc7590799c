"""What a fine-tuning run trains: its ``task`` and ``model`` config sections and the network they define.

A ``finetune`` run stores these two sections in its checkpoints and ``config.yaml``; everything that
rebuilds the trained network from a run (the stage itself, ``maestro publish``, ``predict --model``)
reads them here, below the apps, so that the library never imports :mod:`finetune`. Loaded without
torch: the command checks them before anything heavy is imported.

- :func:`network_config`: the segmenter a run trains, a
  :class:`~maestro.models.segmenter_config.SegmenterConfig` (MAESTRO encoder + head), a
  :class:`~maestro.models.baseline.config.SwinUTAEConfig` (FLAIR-HUB's supervised baseline) or the
  config of one of FLAIR #2's baselines (:mod:`maestro.models.flair2.segmenter_config`);
- :func:`segmentation_task`: the ``task`` entry a published segmenter keeps in ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from maestro.config import from_dict
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from maestro.modalities import resolve as resolve_modalities
from maestro.models.baseline.config import BaselineOptions, SwinUTAEConfig
from maestro.models.config import EncoderConfig
from maestro.models.flair2 import segmenter_config as flair2
from maestro.models.flair2.segmenter_config import (
    FLAIR2_ARCHITECTURES,
    Flair2BaselineOptions,
    UNetSegmenterConfig,
    UTTSegmenterConfig,
)
from maestro.models.heads.options import DatePooling
from maestro.models.heads.registry import HEADS
from maestro.models.segmenter_config import SegmenterConfig
from maestro.nomenclature import Nomenclature
from maestro.tasks import LabelTarget, get_task

EXAMPLE_PRETRAIN_RUN = "example/runs/pretrain"
Architecture = Literal["maestro", "swin-utae", "unet", "utt"]
ARCHITECTURES: tuple[Architecture, ...] = ("maestro", "swin-utae", *FLAIR2_ARCHITECTURES)


@dataclass(frozen=True)
class TaskConfig:
    """What is predicted: a task of :data:`maestro.tasks.TASKS` and its nomenclature level."""

    name: str = "lc"
    """``lc`` (land cover), ``lpis`` (crop type), ``flair2`` or ``custom`` (a user's classes)."""
    level: int = 1
    """Nomenclature level: 1 for lc; 1, 2 or 3 for lpis."""
    nomenclature: Nomenclature | None = None
    """``custom``: the classes of the dataset's nomenclature YAML (``finetune --data-config`` fills
    it), kept with the run so that its checkpoints and published models carry their classes."""
    label_size: int | None = None
    """``custom``: side in pixels of the dataset's label rasters (None: the label modality's
    registry size, 512 px)."""

    def __post_init__(self) -> None:
        if self.nomenclature is not None and self.nomenclature.grouping is not None:
            object.__setattr__(self, "nomenclature", self.nomenclature.classes_only())
        self.target  # noqa: B018  (unknown task or level, missing classes: ConfigError now)
        if self.label_size is not None and self.label_size < 1:
            raise ConfigError(f"label_size: {self.label_size} must be >= 1")

    @property
    def label_pixels(self) -> int:
        """Side of the label rasters, and so of the network's output."""
        return self.label_size or MODALITIES[self.target.label_modality].size_px

    @property
    def target(self) -> LabelTarget:
        classes = self.nomenclature.level() if self.nomenclature is not None else None
        return get_task(self.name).target(self.level, classes)


@dataclass(frozen=True)
class ModelConfig:
    """The pretrained encoder to start from, the inputs to use and the head to train on top."""

    init: str = EXAMPLE_PRETRAIN_RUN
    """``random``; a ``pretrain`` or ``finetune`` checkpoint (``.ckpt``) or run directory (a
    fine-tuning run's ``best.ckpt``, else its newest checkpoint); a folder with ``config.json`` +
    ``model.safetensors``; or a Hub model ``hf:org/name[@revision]`` (``org/name`` works too when no
    local folder has that name). Read by :mod:`maestro.hub.weights`."""
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
    architecture: Architecture = "maestro"
    """``swin-utae``: FLAIR-HUB's supervised baseline (:mod:`maestro.models.baseline`) on the same
    data, metrics and outputs; it reads ``modalities`` / ``encoder`` (inputs only), ``pretrained``,
    ``baseline``, ``aux_heads``, ``aux_weight`` and ``modality_dropout``, not the MAESTRO fields.
    ``unet`` / ``utt``: FLAIR #2's U-Net and U-T&T (:mod:`maestro.models.flair2`); they read
    ``modalities`` / ``encoder`` (inputs only), ``pretrained`` and ``flair2``."""
    pretrained: bool = True
    """Baselines: start from ImageNet weights (swin-utae: the Swins, through timm; unet / utt: the
    U-Net's smp encoder); an error when they cannot be fetched."""
    baseline: BaselineOptions = field(default_factory=BaselineOptions)
    """swin-utae: Swin, U-TAE and decoder settings, and the Sentinel-2 cloudy-date filter."""
    flair2: Flair2BaselineOptions = field(default_factory=Flair2BaselineOptions)
    """unet / utt: smp encoder and decoder widths, U-TAE, fusions, dropouts, auxiliary loss weight."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head: unknown head {self.head!r}; heads are {sorted(HEADS)}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture: {self.architecture!r} is not one of {list(ARCHITECTURES)}")
        if self.is_baseline and self.probe:
            raise ConfigError(
                f"probe: a linear probe applies to a pretrained MAESTRO encoder, not to {self.architecture}"
            )
        if self.architecture in FLAIR2_ARCHITECTURES and (self.aux_heads or self.modality_dropout):
            raise ConfigError(
                f"aux_heads / modality_dropout: not options of {self.architecture} (U-T&T's auxiliary "
                "loss and U-TAE dropout are model.flair2.aux_weight and model.flair2.utae_dropout)"
            )
        if self.init == "random" and self.encoder is None and not self.is_baseline:
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
            if self.architecture in FLAIR2_ARCHITECTURES:
                flair2.check_inputs(self.architecture, self.modalities)
        if self.aux_weight < 0:
            raise ConfigError(f"aux_weight: {self.aux_weight} must be >= 0")

    @property
    def is_baseline(self) -> bool:
        """A supervised baseline (Swin-UTAE, U-Net, U-T&T) rather than a MAESTRO encoder with a head."""
        return self.architecture != "maestro"

    def default_encoder(self, dataset_inputs: tuple[str, ...]) -> EncoderConfig:
        """The inputs of a run without ``encoder`` (random or baseline): ``modalities``, else its
        dataset's default inputs that the network reads; FLAIR #2's baselines read their bands in
        the paper's order."""
        if self.architecture not in FLAIR2_ARCHITECTURES:
            return EncoderConfig(modalities=self.modalities or dataset_inputs)
        modalities = self.modalities or flair2.default_inputs(self.architecture, dataset_inputs)
        return EncoderConfig(modalities=modalities, overrides=flair2.paper_bands(modalities))


Network = SegmenterConfig | SwinUTAEConfig | UNetSegmenterConfig | UTTSegmenterConfig


def network_config(model: ModelConfig, task: TaskConfig) -> Network:
    """The network a run's ``model`` and ``task`` sections describe (``model.encoder`` resolved).

    The baselines are described with random backbones: a fresh run loads the ImageNet weights into
    them (``finetune``), a published one its own weights.
    """
    if model.encoder is None:
        raise ConfigError("model.encoder must be resolved from model.init before building the network")
    target = task.target
    label_size = task.label_pixels
    if model.architecture in FLAIR2_ARCHITECTURES:
        return flair2.network_config(
            model.architecture, model.flair2, model.encoder, task.name, target.num_classes, label_size
        )
    if model.is_baseline:
        options = model.baseline
        return SwinUTAEConfig(
            encoder=model.encoder,
            tasks={task.name: target.num_classes},
            label_size=label_size,
            swin=options.swin,
            utae=options.utae,
            decoder_channels=options.decoder_channels,
            pretrained=False,
            aux_heads=model.aux_heads,
            modality_dropout=model.modality_dropout,
            cloudy_date_fraction=options.cloudy_date_fraction,
        )
    return SegmenterConfig(
        encoder=model.encoder,
        num_classes=target.num_classes,
        head=model.head,
        label_size=label_size,
        feature_indices=model.feature_indices,
        date_pooling=model.date_pooling,
        decoder_channels=model.decoder_channels,
        aux_heads=model.aux_heads,
        modality_dropout=model.modality_dropout,
        freeze_encoder=model.probe,
    )


def segmentation_task(name: str, level: int = 1, nomenclature: Nomenclature | None = None) -> dict[str, Any]:
    """The ``task`` entry of a segmenter's ``config.json``: one class name per output channel, the
    channels that were never trained (ignored values of the nomenclature) and, for a user's
    classes, the whole ``nomenclature`` (names, colours, ignored values) that maps are drawn with."""
    task = TaskConfig(name, level, nomenclature)
    target = task.target
    count = target.num_classes
    entry: dict[str, Any] = {
        "name": target.task,
        "level": target.level,
        "class_names": list(target.names[:count]),
        "ignored": sorted(v for v in target.nomenclature.ignored if v < count),
    }
    if task.nomenclature is not None:
        entry["nomenclature"] = task.nomenclature.to_dict()
    return entry


@dataclass(frozen=True)
class TrainedNetwork:
    """The network a run's stored config describes: its config and, for segmenters, its task."""

    config: Any
    task: dict[str, Any] | None = None


def run_sections(stored: Mapping[str, Any], where: str) -> tuple[ModelConfig, TaskConfig] | None:
    """The ``model`` and ``task`` sections of a stored fine-tuning config; None for another stage's."""
    if "task" not in stored:
        return None
    try:
        task = from_dict(TaskConfig, stored["task"], where="task")
        model = from_dict(ModelConfig, stored.get("model"), where="model")
    except (ConfigError, ValueError) as error:
        raise ConfigError(f"{where}: the stored fine-tuning config does not load ({error})") from None
    return model, task


def segmenter_of_run(stored: Mapping[str, Any], where: str, architecture: str) -> TrainedNetwork | None:
    """The segmenter a fine-tuning run trained, when it is of the ``architecture`` asked for."""
    sections = run_sections(stored, where)
    if sections is None or sections[0].architecture != architecture:
        return None
    model, task = sections
    try:
        config = network_config(model, task)
    except ConfigError as error:
        raise ConfigError(f"{where}: the stored fine-tuning config does not load ({error})") from None
    return TrainedNetwork(config, segmentation_task(task.name, task.level, task.nomenclature))
