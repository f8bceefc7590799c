"""UPerFuse: the default fine-tuning head, UPerNet on multimodal, multitemporal ViT features.

Data flow (sizes at the FLAIR-HUB defaults: reference grid 32 = aerial tokens, labels 512 px)::

    encoder blocks (2, 5, 8, 11): {mod: (B, T, G, h, w, D)} each
    -> per depth and modality: date pooling, bilinear resize to the reference grid   (B, D, 32, 32)
    -> per depth: concatenate modalities, 1x1 conv back to D                            (B, D, 32, 32)
    -> simple feature pyramid: x4 up, x2 up, identity, /2 down    128, 64, 32, 16 px
    -> smp UPerNetDecoder (pyramid pooling 1, 2, 3, 6 + FPN)                        (B, 256, 128, 128)
       (its modules and weights; its resizes as matrix products, :class:`MatmulUPerNetDecoder`)
    -> 1x1 conv to classes, bilinear resize to the label size                      (B, K, 512, 512)

Decoder input convention. smp decoders take an encoder's feature list at strides
``[1, 1/2, 1/4, 1/8, 1/16, 1/32]`` with channels ``encoder.out_channels`` aligned the same way, and
UPerNet reads only ``[2:]``. :class:`SimplePyramid` is that encoder side: its four levels sit at
1/4 ... 1/32 of a virtual image 16 reference cells wide (512 px at the defaults, i.e. the label
raster), and the two strides a ViT has no map for are 0-channel placeholders, as smp's own ViT-like
encoders (``mit_b*``) do: ``out_channels = (0, 0, D, D, D, D)``. :func:`upernet` and
:func:`upernet_features` hold that convention for any four-level pyramid (the Swin-UTAE baseline
decodes its Swin stages with them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.options import PYRAMID_LEVELS, DatePooling, reference_grid
from maestro.models.heads.pooling import DatePool, resample
from maestro.models.heads.registry import HeadParts

if TYPE_CHECKING:
    from maestro.models.segmenter_config import SegmenterConfig


class MatmulUPerNetDecoder(UPerNetDecoder):
    """smp's UPerNet decoder, same modules and weights, its bilinear resizes done as matrix products.

    smp resizes with ``F.interpolate``, whose backward on the GPU is a scatter-add: in the
    compiled fine-tuning step at batch 64, the fusion's three 256-channel maps brought up to
    128 x 128 cost about 7 % of the step. :func:`~maestro.models.heads.pooling.resample` gives the
    same values (bilinear, ``align_corners=False``) with a backward of two matrix products. Only
    :meth:`forward` differs, so a state dict moves between the two classes unchanged.
    """

    def forward(self, features: list[Tensor]) -> Tensor:
        """smp's feature list at strides 1 ... 1/32 (the first two unused) -> ``(B, C, h/4, w/4)``."""
        levels = [norm(feature) for norm, feature in zip(self.feature_norms, features[2:], strict=True)]
        deepest = levels[-1]
        pooled = [resample(block(deepest), deepest.shape[-2:]) for block in self.psp.blocks]
        fpn = [self.psp.out_conv(torch.cat([deepest, *pooled], dim=1))]
        for block, lateral in zip(self.fpn_lateral_blocks, levels[-2::-1], strict=True):
            lateral = block.conv_norm_relu(lateral)
            fpn.append(resample(fpn[-1], lateral.shape[-2:]) + lateral)
        fpn[1:] = [conv(feature) for conv, feature in zip(self.fpn_conv_blocks, fpn[1:], strict=True)]
        size = fpn[-1].shape[-2:]
        return self.fusion_block(torch.cat([resample(feature, size) for feature in reversed(fpn)], dim=1))


def upernet(channels: Sequence[int], decoder_channels: int = 256) -> MatmulUPerNetDecoder:
    """smp's UPerNet decoder for four maps at strides 1/4 ... 1/32 with ``channels`` (shallow first)."""
    if len(channels) != PYRAMID_LEVELS:
        raise ValueError(f"UPerNet reads {PYRAMID_LEVELS} pyramid levels, got channels {list(channels)}")
    encoder_channels = (0, 0, *channels)
    return MatmulUPerNetDecoder(
        encoder_channels=encoder_channels,
        encoder_depth=len(encoder_channels) - 1,
        decoder_channels=decoder_channels,
    )


def upernet_features(levels: Sequence[Tensor]) -> list[Tensor]:
    """Four maps at strides 1/4 ... 1/32 -> smp's feature list, with 0-channel placeholders at 1 and 1/2."""
    if len(levels) != PYRAMID_LEVELS:
        raise ValueError(f"the pyramid takes {PYRAMID_LEVELS} maps, got {len(levels)}")
    batch, _, height, width = levels[0].shape  # stride 1/4
    placeholders = [levels[0].new_empty(batch, 0, height * 4 // s, width * 4 // s) for s in (1, 2)]
    return placeholders + list(levels)


class ModalityFusion(nn.Module):
    """One encoder depth: date pooling per modality on the reference grid, concatenation, 1x1 conv."""

    def __init__(self, modalities: Sequence[str], width: int, size: int, pooling: DatePooling):
        super().__init__()
        self.pools = nn.ModuleDict({key: DatePool(width, pooling, size) for key in modalities})
        self.proj = nn.Conv2d(len(modalities) * width, width, kernel_size=1)

    def forward(self, tokens: Mapping[str, Tensor], valid: Mapping[str, Tensor]) -> Tensor:
        maps = [pool(tokens[key], valid[key]) for key, pool in self.pools.items()]
        return self.proj(torch.cat(maps, dim=1))


class SimplePyramid(nn.Module):
    """Four single-scale ViT maps -> a four-level pyramid (ViTDet / BEiT "simple feature pyramid").

    Level i is built from the i-th map: x4 up (two stride-2 transposed convolutions with
    LayerNorm + GELU between), x2 up, identity, /2 down (max-pool). ``out_channels`` and the
    feature list follow smp's stride convention (module docstring).
    """

    def __init__(self, width: int):
        super().__init__()
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
            LayerNorm2d(width),
            nn.GELU(),
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)
        self.same = nn.Identity()
        self.down2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels: tuple[int, ...] = (0, 0) + (width,) * PYRAMID_LEVELS

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Four ``(B, D, h, w)`` maps, shallow to deep -> six features at strides 1 ... 1/32."""
        if len(maps) != PYRAMID_LEVELS:
            raise ValueError(f"the pyramid takes {PYRAMID_LEVELS} maps, got {len(maps)}")
        levels = [
            layer(x) for layer, x in zip((self.up4, self.up2, self.same, self.down2), maps, strict=True)
        ]
        return upernet_features(levels)


class UPerFuseDecoder(nn.Module):
    """Encoder output -> UPerNet features ``(B, decoder_channels, 4 * grid, 4 * grid)``.

    Reads ``output.intermediates`` (four depths, shallow to deep); ``valid`` masks the dates so
    padded, dropped and missing modalities are ignored by the date pooling.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        width: int,
        grid: int,
        pooling: DatePooling = "attentive",
        decoder_channels: int = 256,
    ):
        super().__init__()
        self.fusion = nn.ModuleList(
            ModalityFusion(modalities, width, grid, pooling) for _ in range(PYRAMID_LEVELS)
        )
        self.pyramid = SimplePyramid(width)
        self.upernet = upernet(self.pyramid.out_channels[2:], decoder_channels)
        self.out_channels = decoder_channels

    def forward(self, output: EncoderOutput) -> Tensor:
        if len(output.intermediates) != PYRAMID_LEVELS:
            raise ValueError(
                f"UPerFuse reads {PYRAMID_LEVELS} encoder depths, got {len(output.intermediates)} intermediates"
            )
        maps = [
            fuse(tokens, output.valid) for fuse, tokens in zip(self.fusion, output.intermediates, strict=True)
        ]
        return self.upernet(self.pyramid(maps))


class SegmentationHead(nn.Module):
    """1x1 conv to class logits, bilinear resize to the label size."""

    def __init__(self, in_channels: int, num_classes: int, label_size: int):
        super().__init__()
        self.label_size = label_size
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return resample(self.conv(features), self.label_size)


def build_uperfuse(config: SegmenterConfig) -> HeadParts:
    """The ``uperfuse`` row of :data:`~maestro.models.heads.registry.HEADS`."""
    encoder = config.encoder
    decoder = UPerFuseDecoder(
        modalities=encoder.modalities,
        width=encoder.transformer.width,
        grid=reference_grid(encoder.specs),
        pooling=config.date_pooling,
        decoder_channels=config.decoder_channels,
    )
    return HeadParts(decoder, SegmentationHead(decoder.out_channels, config.num_classes, config.label_size))
