"""Token <-> pixel mapping for reconstruction: the pixel head and token masks at pixel level."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from maestro.models.config import ModalitySpec


def _band_order(spec: ModalitySpec) -> list[int] | None:
    """Permutation putting group-concatenated channels back in band order (None: already there)."""
    flat = [band for group in spec.token_groups for band in group]
    if flat == list(range(spec.num_bands)):
        return None
    return [flat.index(band) for band in range(spec.num_bands)]


def assemble_groups(parts: list[Tensor], spec: ModalitySpec) -> Tensor:
    """Per-band-group ``(B, T, C_g, H, W)`` tensors -> ``(B, T, C, H, W)`` in band order."""
    stacked = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
    order = _band_order(spec)
    if order is None:
        return stacked
    return stacked[:, :, order]


class PixelHead(nn.Module):
    """Per token band group: a linear map (a 1x1 conv) to ``C_g * p * p``, then pixel shuffle."""

    def __init__(self, spec: ModalitySpec, width: int):
        super().__init__()
        self.spec = spec
        patch_area = spec.patch_size * spec.patch_size
        self.groups = nn.ModuleList(nn.Linear(width, len(group) * patch_area) for group in spec.token_groups)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, T, G, N, width)`` -> ``(B, T, C, H, W)``."""
        spec = self.spec
        parts = [
            rearrange(
                linear(tokens[:, :, index]),
                "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)",
                h=spec.grid,
                p1=spec.patch_size,
                p2=spec.patch_size,
            )
            for index, linear in enumerate(self.groups)
        ]
        return assemble_groups(parts, spec)


def token_mask_to_pixels(mask: Tensor, spec: ModalitySpec) -> Tensor:
    """Token mask ``(B, T, G, N)`` -> pixel mask ``(B, T, C, H, W)`` over each group's bands."""
    parts = [
        repeat(
            mask[:, :, index],
            "b t (h w) -> b t c (h p1) (w p2)",
            h=spec.grid,
            c=len(group),
            p1=spec.patch_size,
            p2=spec.patch_size,
        )
        for index, group in enumerate(spec.token_groups)
    ]
    return assemble_groups(parts, spec)
