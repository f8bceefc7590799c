"""Per-stage fusion of every modality's maps, and the per-task UPerNet decoder that reads the result.

Fusion: for each of the four Swin stages, every modality's map for that stage (a Swin stage, or a
U-TAE decoder level: finest level with the stride-4 stage, deepest with stride 32) is resized
bilinearly to the reference Swin's stage size, the maps are concatenated along channels and a
1 x 1 convolution maps them back to the Swin's stage width. The decoder is smp's ``UPerNetDecoder``
with the suite's four-level input convention (:func:`maestro.models.heads.uperfuse.upernet`),
then the fine-tuning heads' :class:`~maestro.models.heads.uperfuse.SegmentationHead`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from maestro.models.heads.pooling import resample
from maestro.models.heads.uperfuse import PYRAMID_LEVELS, SegmentationHead, upernet, upernet_features


class StageFusion(nn.Module):
    """``{modality: four maps}`` -> four fused maps at the reference stage sizes and widths."""

    def __init__(self, channels: Mapping[str, Sequence[int]], target: Sequence[int]):
        super().__init__()
        self.keys = tuple(channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(sum(channels[key][stage] for key in self.keys), target[stage], kernel_size=1)
            for stage in range(PYRAMID_LEVELS)
        )

    def forward(self, maps: Mapping[str, Sequence[Tensor]], sizes: Sequence[int]) -> list[Tensor]:
        """``sizes``: side of each stage's output (the reference Swin's stage maps)."""
        return [
            conv(torch.cat([resample(maps[key][stage], sizes[stage]) for key in self.keys], dim=1))
            for stage, conv in enumerate(self.convs)
        ]


class TaskDecoder(nn.Module):
    """Four stage maps (strides 4 ... 32) -> UPerNet -> class logits at the label size."""

    def __init__(self, channels: Sequence[int], decoder_channels: int, num_classes: int, label_size: int):
        super().__init__()
        self.upernet = upernet(channels, decoder_channels)
        self.head = SegmentationHead(decoder_channels, num_classes, label_size)

    def forward(self, stages: Sequence[Tensor]) -> Tensor:
        return self.head(self.upernet(upernet_features(stages)))
