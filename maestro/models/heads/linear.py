"""The linear-probe head: one linear layer on frozen encoder tokens (``finetune --probe``).

Data flow (FLAIR-HUB defaults: aerial grid 32, labels 512 px, f = 16)::

    final token maps {mod: (B, T, G, h, w, D)}
    -> per modality, the mean of each location's valid (date, band group) tokens,
       resized bilinearly to the reference grid                                  (B, D, 32, 32)
    -> modalities concatenated                                                   (B, M*D, 32, 32)
    -> standardised (BatchNorm without affine parameters: running statistics only)
    -> one linear layer (a 1x1 convolution) to K classes                          (B, K, 32, 32)
    -> every label pixel takes the logits of the token it lies in (nearest)      (B, K, 512, 512)

The features are those of ``finetune/linear_probe.py`` (mean of the valid tokens on the finest
grid, standardised), and so is the kind of target: the pixel-wise cross-entropy of a token's
logits over its pixels is the cross-entropy against the token's label histogram (weighted by its
labelled pixels). The linear layer's weight and bias are the only parameters; the mean and the standardisation learn nothing, so the scores
measure what the frozen features hold, not what a decoder can add.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.options import reference_grid
from maestro.models.heads.pooling import DatePool
from maestro.models.heads.registry import HeadParts

if TYPE_CHECKING:
    from maestro.models.segmenter_config import SegmenterConfig


class TokenMeans(nn.Module):
    """Final token maps of every modality -> ``(B, M * D, grid, grid)``, without parameters.

    Mean pooling commutes with bilinear resizing (a date's validity is the same at every
    location), so each modality is pooled on its own grid first and only one map is resized.
    Padded, dropped and missing modalities' dates count nowhere; a modality without a valid date
    contributes zeros.
    """

    def __init__(self, modalities: Sequence[str], width: int, grid: int):
        super().__init__()
        self.pools = nn.ModuleDict({key: DatePool(width, "mean", grid) for key in modalities})
        self.out_channels = width * len(self.pools)

    def forward(self, output: EncoderOutput) -> Tensor:
        return torch.cat([pool(output.tokens[key], output.valid[key]) for key, pool in self.pools.items()], 1)


class LinearHead(nn.Module):
    """``(B, C, h, w)`` -> standardise -> linear layer -> ``(B, K, label_size, label_size)``, each
    pixel with the logits of the token whose cell holds its centre (no interpolation: still linear
    per token)."""

    def __init__(self, in_channels: int, num_classes: int, label_size: int):
        super().__init__()
        self.label_size = label_size
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.linear = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        logits = self.linear(self.norm(features))
        return F.interpolate(logits, size=self.label_size, mode="nearest-exact")


def build_linear(config: SegmenterConfig) -> HeadParts:
    """The ``linear`` row of :data:`~maestro.models.heads.registry.HEADS`."""
    encoder = config.encoder
    grid = reference_grid(encoder.specs)
    decoder = TokenMeans(encoder.modalities, encoder.transformer.width, grid)
    return HeadParts(decoder, LinearHead(decoder.out_channels, config.num_classes, config.label_size))
