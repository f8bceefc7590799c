"""The model types a model folder can hold: one frozen row per ``model_type`` of ``config.json``.

Like :mod:`maestro.modalities`, every part of the hub code (loading, saving, cards, publishing)
reads these rows instead of branching on class names, so a new publishable network is one row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from maestro.errors import ConfigError
from maestro.hub.folder import MODEL_TYPES
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.encoder import MaestroEncoder
from maestro.models.mae import MaestroMAE
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig


@dataclass(frozen=True)
class ModelType:
    """How to rebuild one kind of published network from its ``config.json``."""

    name: str
    """``model_type`` in ``config.json``."""
    model_class: type[nn.Module]
    config_class: type
    """Dataclass with ``from_dict`` / ``to_dict``; ``config.json["config"]`` is its plain form."""
    encoder_prefix: str | None
    """Where the encoder's tensors sit in the state dict (``""``: the network is the encoder)."""
    pipeline_tag: str
    """Hugging Face pipeline tag of the model card."""
    description: str
    """One line for cards and logs."""
    needs_task: bool = False
    """Whether ``config.json`` carries the ``task`` (name, level, class names) of the outputs."""

    def config_from_dict(self, data: Mapping[str, Any]) -> Any:
        return self.config_class.from_dict(data)

    def build(self, config: Any) -> nn.Module:
        return self.model_class(config)

    def encoder_config(self, config: Any) -> EncoderConfig:
        """The encoder inside a config of this type."""
        return config if isinstance(config, EncoderConfig) else config.encoder


MODEL_REGISTRY: dict[str, ModelType] = {
    row.name: row
    for row in (
        ModelType(
            "maestro-encoder",
            MaestroEncoder,
            EncoderConfig,
            "",
            "feature-extraction",
            "MAESTRO encoder: multimodal, multitemporal inputs to per-modality token maps",
        ),
        ModelType(
            "maestro-mae",
            MaestroMAE,
            MAEConfig,
            "encoder.",
            "feature-extraction",
            "MAESTRO masked autoencoder: encoder, decoders and pixel heads (pretraining state)",
        ),
        ModelType(
            "maestro-segmenter",
            MaestroSegmenter,
            SegmenterConfig,
            "encoder.",
            "image-segmentation",
            "MAESTRO encoder fine-tuned with a segmentation head",
            needs_task=True,
        ),
    )
}
"""All publishable model types by ``model_type``."""

assert tuple(MODEL_REGISTRY) == MODEL_TYPES, "maestro.hub.folder.MODEL_TYPES and the registry disagree"


def get_model_type(name: str) -> ModelType:
    """Registry lookup with an error that lists the known types."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model_type {name!r}; known types: {list(MODEL_REGISTRY)}") from None


def model_type_of(model: nn.Module | type[nn.Module]) -> ModelType:
    """The row of a network (or network class); a class outside the registry is an error."""
    cls = model if isinstance(model, type) else type(model)
    for row in MODEL_REGISTRY.values():
        if issubclass(cls, row.model_class):
            return row
    known = [row.model_class.__name__ for row in MODEL_REGISTRY.values()]
    raise ConfigError(f"{cls.__name__} is not a publishable model; publishable classes: {known}")
