"""Patch embedding: images of one modality -> tokens (modality, date, band group, patch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from maestro.models.config import ModalitySpec


class BandGroupEmbed(nn.Module):
    """Conv2d(kernel = stride = patch) then GroupNorm(1, dim) over the whole frame.

    The frame-wide GroupNorm removes per-frame brightness/contrast offsets (sensor gains, seasons)
    before tokens meet the transformer. The projection is computed as patchify + one matrix product
    with the conv weight (same function, same parameters): cuDNN runs a kernel = stride = 16 conv
    and its weight gradient an order of magnitude slower than the equivalent GEMM.
    """

    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.GroupNorm(1, width)

    def forward(self, frames: Tensor) -> Tensor:
        """``(frames, C_g, H, W)`` -> ``(frames, width, h, w)``."""
        patch = self.proj.kernel_size[0]
        patches = rearrange(frames, "n c (h p1) (w p2) -> n h w (c p1 p2)", p1=patch, p2=patch)
        tokens = F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)
        return self.norm(rearrange(tokens, "n h w d -> n d h w"))


class ModalityEmbed(nn.Module):
    """One :class:`BandGroupEmbed` per token band group of a modality."""

    def __init__(self, spec: ModalitySpec, width: int):
        super().__init__()
        self.spec = spec
        self.groups = nn.ModuleList(
            BandGroupEmbed(len(group), width, spec.patch_size) for group in spec.token_groups
        )
        self.all_bands = spec.token_groups == (tuple(range(spec.num_bands)),)
        for index, group in enumerate(spec.token_groups):
            self.register_buffer(f"bands{index}", torch.tensor(group, dtype=torch.long), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> tokens ``(B, T, G, N, width)`` with ``N = h * w`` row-major."""
        batch = images.shape[0]
        frames = rearrange(images, "b t c h w -> (b t) c h w")
        tokens = []
        for index, embed in enumerate(self.groups):
            selected = frames if self.all_bands else frames.index_select(1, getattr(self, f"bands{index}"))
            tokens.append(embed(selected))
        stacked = tokens[0].unsqueeze(1) if len(tokens) == 1 else torch.stack(tokens, dim=1)
        return rearrange(stacked, "(b t) g d h w -> b t g (h w) d", b=batch)


class MaskToken(nn.Module):
    """Learned decoder-width token per band group that stands in for masked tokens of a modality.

    One module (parameter ``token``) per modality, so optimiser rules that exempt ``*token``
    parameters from weight decay find it by name.
    """

    def __init__(self, num_groups: int, width: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(num_groups, width))
        nn.init.normal_(self.token, std=0.02)

    def fill(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens (B, T, G, N, D)`` with masked entries (``mask (B, T, G, N)``) replaced."""
        token = rearrange(self.token, "g d -> 1 1 g 1 d").to(tokens.dtype)
        return torch.where(mask[..., None], token, tokens)
