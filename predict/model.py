"""The network to map with and everything it dictates: inputs, footprint, classes, colours.

``--model`` names a fine-tuning run (its ``best.ckpt``; EMA weights unless ``weights="model"``), a
model folder or a Hub model (``hf:org/name[@revision]``, or ``org/name``); all are read by
:func:`maestro.hub.weights.load_weights` without unpickling anything. Any registered segmenter
maps: the MAESTRO segmenter or the Swin-UTAE and U-Net baselines, each fed the preprocessing it was
trained with (its registry row says what that adds to the shared one); U-T&T is refused (its row
says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from maestro.data.preprocess import PreprocessConfig
from maestro.errors import ConfigError
from maestro.hub.pretrained import build
from maestro.hub.weights import Pick, Weights
from maestro.labels import RGB, palette
from maestro.modalities import MODALITIES, with_companions
from maestro.models.config import ModalitySpec
from maestro.models.registry import ModelType, model_type_of_config
from maestro.models.zoo import load_weights
from maestro.nomenclature import Nomenclature
from maestro.tasks import LabelTarget, get_task
from maestro.training.data import preprocess_for
from predict.options import MODEL_SOURCES, find_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInfo:
    """What the output channels mean: the task's nomenclature level and its class names."""

    target: LabelTarget
    class_names: tuple[str, ...]
    """One name per output channel (channel k predicts class value k)."""
    ignored: tuple[int, ...]
    """Channels never trained (ignored values of the nomenclature): never predicted."""

    @property
    def palette(self) -> tuple[RGB, ...]:
        return palette(self.target.nomenclature)


@dataclass(frozen=True)
class PredictModel:
    """A segmenter ready for inference, with the facts of its config the mapping needs."""

    network: nn.Module
    config: Any
    """The config of a segmenter type of the registry: ``SegmenterConfig`` or ``SwinUTAEConfig``."""
    task: TaskInfo
    source: str
    """Where the weights came from, in words (logged and written into the map's metadata)."""

    @property
    def model_type(self) -> ModelType:
        return model_type_of_config(self.config)

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return dict(self.model_type.inputs(self.config).specs)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def tile_size(self) -> int:
        """Output pixels per tile side: the label size."""
        return self.config.label_size

    @property
    def label_pixel_m(self) -> float:
        """Ground size of an output pixel: the label raster's pixel in the registry."""
        return MODALITIES[self.task.target.label_modality].pixel_size_m

    @property
    def footprint_m(self) -> float:
        """Ground side of one model input (102.4 m at default sizes)."""
        return self.tile_size * self.label_pixel_m

    def input_pixel_m(self, key: str) -> float:
        """Ground size of the pixels the model reads for ``key`` (the registry's at default sizes)."""
        return self.footprint_m / self.specs[key].image_size

    def preprocess(self, cloud_avoidance: bool = True) -> PreprocessConfig:
        """The training preprocessing for this model's inputs (bands and dates from its config,
        and what its type adds, e.g. the baseline's cloudy-date filter)."""
        options = self.model_type.preprocess_options(self.config)
        return preprocess_for(self.specs, cloud_avoidance=cloud_avoidance, **options)

    def rasters(self, cloud_avoidance: bool = True) -> list[str]:
        """Zone rasters needed: every input, plus their cloud masks when cloud avoidance is on."""
        inputs = list(self.specs)
        return with_companions(inputs) if cloud_avoidance else inputs


def task_info(
    name: str,
    level: int,
    num_classes: int,
    class_names: Any = None,
    ignored: Any = None,
    where: str = "",
    nomenclature: Any = None,
) -> TaskInfo:
    """Task facts from a name and level (and a user's ``nomenclature``, for the custom task),
    checked against the network's output channels."""
    try:
        classes = Nomenclature.from_dict(nomenclature).level() if nomenclature is not None else None
        target = get_task(name).target(level, classes)
    except ConfigError as error:
        raise ConfigError(f"{where}: the task of the model does not load ({error})") from None
    if target.num_classes != num_classes:
        raise ConfigError(
            f"{where}: the network has {num_classes} output channels but {name} level {level} has "
            f"{target.num_classes} classes"
        )
    names = tuple(class_names) if class_names is not None else target.names[:num_classes]
    if len(names) != num_classes:
        raise ConfigError(f"{where}: {len(names)} class names for {num_classes} output channels")
    if ignored is None:
        ignored = [v for v in target.nomenclature.ignored if v < num_classes]
    return TaskInfo(target, names, tuple(sorted(int(v) for v in ignored)))


def predict_model(weights: Weights) -> PredictModel:
    """A segmenter's weights -> the network in eval mode with its task, checked against its outputs."""
    row = weights.model_type
    if not row.needs_task:
        raise ConfigError(
            f"{weights.source}: a {row.name} cannot map a zone; give a segmenter (a fine-tuning run or a "
            "published segmenter)"
        )
    if row.zone_refusal is not None:
        raise ConfigError(f"{weights.source}: a {row.name} cannot map a zone. {row.zone_refusal}")
    task = weights.task or {}
    if "name" not in task or "level" not in task:
        raise ConfigError(f"{weights.source}: no task name and level, so the classes of the map are unknown")
    config = weights.config
    info = task_info(
        task["name"],
        task["level"],
        config.num_classes,
        task.get("class_names"),
        task.get("ignored"),
        weights.source,
        task.get("nomenclature"),
    )
    source = weights.note if weights.checkpoint is not None else weights.source
    return PredictModel(build(weights, source), config, info, source)


def load_model(spec: str, weights: Pick = "ema", device: str | torch.device = "cpu") -> PredictModel:
    """A fine-tuning run, model folder or Hub model (module docstring) -> a model on ``device``."""
    find_model(spec)
    model = predict_model(load_weights(spec, None, weights, kinds=MODEL_SOURCES, user="--model"))
    model.network.to(device)
    log.info(
        "model: %s (%s level %d, %d classes, tiles of %.1f m)",
        model.source,
        model.task.target.task,
        model.task.target.level,
        model.num_classes,
        model.footprint_m,
    )
    return model
