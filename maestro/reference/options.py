"""What the user decides about a conversion; everything else is read from the checkpoint.

Loaded without torch: ``maestro import-reference`` builds its flags from these names before the
converter is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

TargetType = Literal["maestro-mae", "maestro-encoder", "maestro-segmenter"]
"""What a converted folder holds: the whole MAE (the default), its encoder, or the encoder with the
checkpoint's segmentation head. Each is a ``model_type`` of :mod:`maestro.hub.folder`; the
converter writes these, not every type a folder may hold."""
TARGET_TYPES: tuple[TargetType, ...] = get_args(TargetType)
Weights = Literal["ema", "model"]

OPTION_FLAGS = {
    "num_heads": "--num-heads N",
    "decoder_heads": "--decoder-heads N",
    "target": "--target NAME",
    "num_classes": "--num-classes K",
    "overrides": "--image-size MOD=PX, --num-dates MOD=N",
}
"""Command-line flags of the :class:`ConversionOptions` fields that messages ask for."""


def ask(option: str) -> str:
    """How to give a conversion option, in a message read by CLI and Python users alike."""
    return f"{OPTION_FLAGS[option]} (ConversionOptions.{option} in Python)"


@dataclass(frozen=True)
class ConversionOptions:
    """What the user decides about a conversion; everything else is read from the checkpoint."""

    weights: Weights = "ema"
    """The EMA copy (default) or the trained weights."""
    model_type: TargetType = "maestro-mae"
    """What the folder holds: the encoder, the whole MAE, or a segmenter with the reference head."""
    overrides: Mapping[str, Any] | None = None
    """Per-modality image sizes / dates the checkpoint does not store (registry defaults else)."""
    grid_size: int | None = None
    """Position grid (the reference's 160 for FLAIR-HUB by default)."""
    num_heads: int | None = None
    """Encoder heads (no tensor shape holds them; the reference's size table by default)."""
    decoder_heads: int | None = None
    """Decoder heads (default: decoder width / 32)."""
    target: str | None = None
    """Segmentation head of the reference to convert (``maestro-segmenter``)."""
    num_classes: int | None = None
    """Classes of that head, when the converter does not know its target."""


DEFAULT_OPTIONS = ConversionOptions()
