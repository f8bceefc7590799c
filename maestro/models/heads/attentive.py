"""The MAESTRO head of the paper: attentive pooling over modalities and dates, then pixel shuffle.

Data flow (FLAIR-HUB defaults: aerial grid 32, labels 512 px, f = 16)::

    final token maps {mod: (B, T, G, h, w, D)}
    -> every (date, band group) frame resized bilinearly to the reference grid          32 x 32
    -> per location, the tokens of all modalities, dates and band groups stacked     (B*32*32, L, D)
    -> attentive pooling (LayerNorm, one learned query, 8 heads, LayerNorm)            (B, D, 32, 32)
    -> 1x1 conv to K * f^2, pixel shuffle by f                                        (B, K, 512, 512)

Padded, dropped and missing modalities' dates are excluded from the stack by the key mask. The
shuffle reads channels in the reference's order ``(f_row, f_col, class)`` so its converted 1x1
convolution needs no permutation. (The linear probe is the ``linear`` head, :mod:`.linear`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import Tensor, nn

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.options import DatePooling, reference_grid
from maestro.models.heads.pooling import make_pool, token_sets
from maestro.models.heads.registry import HeadParts

if TYPE_CHECKING:
    from maestro.models.segmenter_config import SegmenterConfig


class StackedPool(nn.Module):
    """Final token maps of every modality -> pooled features ``(B, D, grid, grid)``.

    These are the features a conversion compares with the reference head's pooled output.
    """

    def __init__(self, modalities: Sequence[str], width: int, grid: int, pooling: DatePooling = "attentive"):
        super().__init__()
        self.modalities = tuple(modalities)
        self.grid = grid
        self.pool = make_pool(pooling, width)
        self.out_channels = width

    def forward(self, output: EncoderOutput) -> Tensor:
        stacked = [token_sets(output.tokens[key], output.valid[key], self.grid) for key in self.modalities]
        sets = torch.cat([s for s, _ in stacked], dim=1)
        key_valid = torch.cat([v for _, v in stacked], dim=1)
        batch = output.valid[self.modalities[0]].shape[0]
        return rearrange(self.pool(sets, key_valid), "(b h w) d -> b d h w", b=batch, h=self.grid)


class PixelShuffleHead(nn.Module):
    """``(B, D, h, w)`` -> 1x1 conv to ``K * f^2`` -> ``(B, K, h * f, w * f)``, one f x f block per token."""

    def __init__(self, in_channels: int, num_classes: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(in_channels, num_classes * factor * factor, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return rearrange(
            self.conv(features), "b (p q k) h w -> b k (h p) (w q)", p=self.factor, q=self.factor
        )


def build_maestro(config: SegmenterConfig) -> HeadParts:
    """The ``maestro`` row of :data:`~maestro.models.heads.registry.HEADS`."""
    encoder = config.encoder
    grid = reference_grid(encoder.specs)
    decoder = StackedPool(encoder.modalities, encoder.transformer.width, grid, config.date_pooling)
    return HeadParts(
        decoder, PixelShuffleHead(decoder.out_channels, config.num_classes, config.label_size // grid)
    )
