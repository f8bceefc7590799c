"""U-TAE: a U-Net over dates with L-TAE attention at its deepest level (Garnot & Landrieu, ICCV 2021).

Data flow for one Sentinel modality (FLAIR-HUB: 10 x 10 px, stride-1 levels, widths 64, 64, 128, 128)::

    (B, T, C, H, W) -> per date: in conv (GroupNorm) -> down blocks      levels 0..3, (B, T, w_i, H, W)
    deepest level -> L-TAE over the valid dates -> (B, w_3, H, W) + attention (heads, B, T, H, W)
    up blocks: each skip level = the same attention applied per channel group ("att_group"),
               transposed conv + skip conv + two convs (BatchNorm)           (B, d_i, H, W)
    -> maps finest first [d_0, d_1, d_2, d_3]; optional output convs -> class logits (B, K, H, W)

The per-date encoder uses GroupNorm, which normalises each frame on its own, so padded dates never
change the features of real ones; their inputs are zeroed, and the attention gives them weight 0.
Changing the values of a padded date therefore changes no output (tests pin this).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from maestro.models.baseline.config import UTAEConfig
from maestro.models.baseline.ltae import LTAE


def conv_layer(
    cin: int, cout: int, norm: nn.Module, kernel: int = 3, stride: int = 1, *, transposed: bool = False
) -> nn.Sequential:
    """Convolution (reflect padding, keeps the size at stride 1) + norm + ReLU."""
    padding = (kernel - stride) // 2
    if transposed:
        conv: nn.Module = nn.ConvTranspose2d(cin, cout, kernel, stride, padding)
    else:
        conv = nn.Conv2d(cin, cout, kernel, stride, padding, padding_mode="reflect")
    return nn.Sequential(conv, norm, nn.ReLU())


class DownBlock(nn.Module):
    """Down convolution (kernel, stride), then a residual pair of 3x3 convolutions; GroupNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int):
        super().__init__()
        self.down = conv_layer(cin, cin, nn.GroupNorm(groups, cin), kernel, stride)
        self.conv1 = conv_layer(cin, cout, nn.GroupNorm(groups, cout))
        self.conv2 = conv_layer(cout, cout, nn.GroupNorm(groups, cout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.down(x))
        return x + self.conv2(x)


class UpBlock(nn.Module):
    """Transposed convolution up, concatenation with the (1x1-projected) skip, residual 3x3 pair."""

    def __init__(self, cin: int, cout: int, skip: int, kernel: int, stride: int):
        super().__init__()
        self.skip = conv_layer(skip, skip, nn.BatchNorm2d(skip), kernel=1)
        self.up = conv_layer(cin, cout, nn.BatchNorm2d(cout), kernel, stride, transposed=True)
        self.conv1 = conv_layer(cout + skip, cout, nn.BatchNorm2d(cout))
        self.conv2 = conv_layer(cout, cout, nn.BatchNorm2d(cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = self.skip(skip)
        if skip.shape[-2:] != x.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.conv1(torch.cat([x, skip], dim=1))
        return x + self.conv2(x)


def aggregate(attention: Tensor, features: Tensor) -> Tensor:
    """Group attention: head ``h``'s weights ``(heads, B, T, h, w)`` average channel group ``h`` of
    ``(B, T, C, H, W)`` over dates, resized to the level's size first (weights still sum to 1)."""
    heads, batch, dates = attention.shape[:3]
    if attention.shape[-2:] != features.shape[-2:]:
        flat = rearrange(attention, "g b t y x -> (g b) t y x")
        flat = F.interpolate(flat, size=features.shape[-2:], mode="bilinear", align_corners=False)
        attention = rearrange(flat, "(g b) t y x -> g b t y x", g=heads)
    groups = rearrange(features, "b t (g c) y x -> g b t c y x", g=heads)
    pooled = torch.einsum("gbtyx,gbtcyx->gbcyx", attention.to(features.dtype), groups)
    return rearrange(pooled, "g b c y x -> b (g c) y x")


class UTAEOutput(NamedTuple):
    maps: list[Tensor]
    """Decoder maps, finest level first: ``(B, decoder_widths[i], H_i, W_i)``."""
    logits: Tensor | None
    """``(B, K, H, W)`` from the output convolutions, when the U-TAE has them."""


class UTAE(nn.Module):
    """One Sentinel modality's time series -> decoder maps (and optionally class logits).

    ``fused``: the maps feed a fusion with Swin stages (widths :data:`FUSED_WIDTHS` by default);
    otherwise the U-TAE is the whole model and its own widths apply (:meth:`UTAEConfig.widths`).
    """

    def __init__(
        self, config: UTAEConfig, in_channels: int, num_classes: int | None = None, *, fused: bool = True
    ):
        super().__init__()
        enc, dec = config.widths(fused)
        groups, kernel, stride = config.norm_groups, config.kernel_size, config.stride
        self.in_conv = nn.Sequential(
            conv_layer(in_channels, enc[0], nn.GroupNorm(groups, enc[0])),
            conv_layer(enc[0], enc[0], nn.GroupNorm(groups, enc[0])),
        )
        self.down = nn.ModuleList(
            DownBlock(enc[i], enc[i + 1], kernel, stride, groups) for i in range(len(enc) - 1)
        )
        self.ltae = LTAE(
            enc[-1], enc[-1], config.d_model, config.num_heads, config.d_k, config.period, config.dropout
        )
        self.up = nn.ModuleList(
            UpBlock(dec[i + 1], dec[i], enc[i], kernel, stride) for i in range(len(enc) - 1)
        )
        self.out_conv: nn.Sequential | None = None
        if num_classes is not None:
            widths = (dec[0], *config.out_widths)
            layers = [
                conv_layer(a, b, nn.BatchNorm2d(b)) for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
            self.out_conv = nn.Sequential(*layers, nn.Conv2d(widths[-1], num_classes, kernel_size=1))

    def forward(self, x: Tensor, days: Tensor, valid: Tensor) -> UTAEOutput:
        """``x (B, T, C, H, W)``, day offsets ``days (B, T)``, ``valid (B, T)`` (False: padding)."""
        batch = x.shape[0]
        valid = valid.bool()
        x = torch.where(valid[:, :, None, None, None], x, 0.0)
        frames = [self.in_conv(rearrange(x, "b t c h w -> (b t) c h w"))]
        for block in self.down:
            frames.append(block(frames[-1]))
        levels = [rearrange(f, "(b t) c h w -> b t c h w", b=batch) for f in frames]
        out, attention = self.ltae(levels[-1], days, valid)
        maps = [out]
        for index in reversed(range(len(self.up))):
            out = self.up[index](out, aggregate(attention, levels[index]))
            maps.append(out)
        maps.reverse()
        logits = self.out_conv(maps[0]) if self.out_conv is not None else None
        return UTAEOutput(maps, logits)
