"""The head registry: one row per segmentation head a :class:`~maestro.models.segmenter.MaestroSegmenter`
can carry, looked up by the name in :class:`~maestro.models.segmenter_config.SegmenterConfig`.

A head is two modules in smp's order encoder -> decoder -> head: a *decoder* that turns the
encoder output into one feature map, and a *head* that turns that map into logits at the label
size. A row also says which encoder features the decoder reads (``num_depths`` intermediate block
outputs, or only the final token maps) and any config check of its own. Adding a head is one row
and the module that builds it. Rows name their builder (``module:function``), imported when a
network is built: configs and every command read this table at start-up, before torch loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from maestro.errors import ConfigError
from maestro.models.heads.options import PYRAMID_LEVELS, reference_grid

if TYPE_CHECKING:
    from torch import nn

    from maestro.models.segmenter_config import SegmenterConfig


class HeadParts(NamedTuple):
    """``decoder(EncoderOutput) -> (B, C, h, w)`` features; ``head(features) -> (B, K, H, W)`` logits."""

    decoder: nn.Module
    head: nn.Module


@dataclass(frozen=True)
class HeadSpec:
    """One segmentation head: how to build it and what it needs from the encoder."""

    name: str
    builder: str
    """``module:function`` that builds the parts from a :class:`SegmenterConfig` (:meth:`build`)."""
    description: str
    """One line, for listings and errors."""
    num_depths: int
    """Intermediate encoder block outputs the decoder reads; 0: only the final token maps."""
    check: Callable[[SegmenterConfig], None] | None = None
    """Head-specific config validation, raising :class:`~maestro.errors.ConfigError`."""

    def build(self, config: SegmenterConfig) -> HeadParts:
        """The decoder and head of ``config``, from the builder this row names."""
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)(config)


def check_maestro(config: SegmenterConfig) -> None:
    """Pixel shuffle needs a whole number of label pixels per reference token."""
    grid = reference_grid(config.encoder.specs)
    if config.label_size % grid:
        raise ConfigError(
            f"label_size: head 'maestro' pixel-shuffles each of the {grid}x{grid} reference tokens into "
            f"label_size / {grid} pixels; {config.label_size} is not a multiple of {grid}"
        )


HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec(
            name="uperfuse",
            builder="maestro.models.heads.uperfuse:build_uperfuse",
            description="four encoder depths, date pooling and modality fusion, simple pyramid, UPerNet",
            num_depths=PYRAMID_LEVELS,
        ),
        HeadSpec(
            name="maestro",
            builder="maestro.models.heads.attentive:build_maestro",
            description="the paper's head: attentive pooling over modalities and dates, pixel shuffle",
            num_depths=0,
            check=check_maestro,
        ),
        HeadSpec(
            name="linear",
            builder="maestro.models.heads.linear:build_linear",
            description="the linear probe: one linear layer on the mean of each modality's final tokens",
            num_depths=0,
        ),
    )
}
"""All segmentation heads by name."""


def get_head(name: str) -> HeadSpec:
    """Registry lookup with an error that lists the valid names."""
    try:
        return HEADS[name]
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; valid names are {sorted(HEADS)}") from None
