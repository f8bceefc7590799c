"""U-T&T's two fusion modules: the U-TAE's finest decoder map, reshaped for every U-Net encoder level.

Where (IGNF/FLAIR-2, ``src/backbones/txt_model.py`` and ``fusion_utils.py``): both modules read the
U-TAE's last (finest, full super-patch size) decoder map ``(B, C, S, S)`` and produce one map per
U-Net encoder level, with that level's channels and size; their sum is *added to the U-Net encoder
features* before the U-Net decoder reads them (not to the decoder's last features).

- cropped: the centre ``footprint x footprint`` window of the map (the aerial patch's footprint,
  the super-patch being centred on the patch), a 1x1 convolution per level to its channels, then a
  bilinear resize to its size. Keeps the spatial layout of the patch area.
- collapsed: the map averaged over the whole super-patch (one vector per sample), a 3-layer MLP per
  level to its channels, broadcast over the level's pixels. Carries the wider context.

Two departures from the reference, both deliberate: the collapsed vector is each sample's own (the
reference averages sample 0's map and broadcasts it to the whole batch), and no module is built for
the stride-1 "level" (the input image), which smp's U-Net decoder never reads.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The ``size x size`` window of ``(..., S, S)`` whose top-left corner is ``(S - size) // 2``:
    rows / columns 15 to 24 of a 40 px super-patch for the 10 px footprint."""
    height, width = x.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"footprint {size} px does not fit a {height} x {width} super-patch map")
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]


def collapsed_widths(cin: int, cout: int) -> tuple[int, ...]:
    """Widths of a collapsed-module MLP: two hidden layers stepping from ``cin`` towards ``cout`` by a
    third of the gap each (twice ``cin`` when the two are equal), as the reference sizes them."""
    if cin == cout:
        return (cin, 2 * cin, 2 * cin, cout)
    step = abs(cin - cout) // 3 * (1 if cout > cin else -1)
    return (cin, cin + step, cin + 2 * step, cout)


class CroppedFusion(nn.Module):
    """Centre crop to the aerial footprint, 1x1 convolution and bilinear resize per U-Net level."""

    def __init__(self, cin: int, level_channels: tuple[int, ...], footprint: int):
        super().__init__()
        self.footprint = footprint
        self.convs = nn.ModuleList(nn.Conv2d(cin, channels, kernel_size=1) for channels in level_channels)

    def forward(self, utae_map: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
        window = centre_crop(utae_map, self.footprint)
        return [
            F.interpolate(conv(window), size=size, mode="bilinear", align_corners=False)
            for conv, size in zip(self.convs, sizes, strict=True)
        ]


class CollapsedFusion(nn.Module):
    """Spatial mean of the whole super-patch map, an MLP per U-Net level, broadcast to its pixels."""

    def __init__(self, cin: int, level_channels: tuple[int, ...], dropout: float):
        super().__init__()
        self.mlps = nn.ModuleList()
        for channels in level_channels:
            widths = collapsed_widths(cin, channels)
            layers: list[nn.Module] = []
            for index, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
                layers.append(nn.Linear(a, b))
                if index < len(widths) - 2:
                    layers += [nn.Dropout(dropout), nn.ReLU()]
            self.mlps.append(nn.Sequential(*layers))

    def forward(self, utae_map: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
        vector = utae_map.mean(dim=(-2, -1))
        return [
            repeat(mlp(vector), "b c -> b c h w", h=h, w=w)
            for mlp, (h, w) in zip(self.mlps, sizes, strict=True)
        ]
