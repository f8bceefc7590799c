"""Reconstruction target and loss.

The target is normalised per sample, date, token patch and registry normalisation band group
(mean 0, unit unbiased variance over the group's ``p x p x C_g`` values), so that the model
learns textures and spectral shapes rather than absolute brightness, and every sensor's loss has
a comparable scale. The loss is L1 on masked pixels of valid dates, averaged per modality, then
modalities are weighted by their token count (dates x band groups x patches).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor

NORM_EPS = 1e-6


def normalise_patches(
    images: Tensor, patch_size: int, groups: tuple[tuple[int, ...], ...], eps: float = NORM_EPS
) -> Tensor:
    """``(B, T, C, H, W)`` -> same shape, each (patch, band group) standardised on its own."""
    height = images.shape[-2] // patch_size
    patches = rearrange(
        images.float(), "b t c (h p1) (w p2) -> b t h w c (p1 p2)", p1=patch_size, p2=patch_size
    )
    normalised = torch.zeros_like(patches)
    for group in groups:
        index = torch.tensor(group, device=images.device)
        values = patches.index_select(-2, index)
        mean = values.mean(dim=(-2, -1), keepdim=True)
        var = values.var(dim=(-2, -1), keepdim=True, unbiased=True)
        normalised[..., index, :] = (values - mean) / torch.sqrt(var + eps)
    return rearrange(
        normalised, "b t h w c (p1 p2) -> b t c (h p1) (w p2)", h=height, p1=patch_size, p2=patch_size
    )


def masked_l1(prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean |prediction - target| over ``pixel_mask``; returns (loss, number of pixels).

    ``torch.where`` rather than multiplication, so non-finite values outside the mask can never
    leak into the loss or its gradient.
    """
    error = torch.where(pixel_mask, (prediction.float() - target.float()).abs(), 0.0)
    count = pixel_mask.sum()
    return error.sum() / count.clamp(min=1), count


def reconstruction_loss(
    predictions: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    pixel_masks: Mapping[str, Tensor],
    weights: Mapping[str, float],
) -> tuple[Tensor, dict[str, Tensor]]:
    """(total, per-modality losses). Modalities without any masked valid pixel get weight 0."""
    losses: dict[str, Tensor] = {}
    weighted = []
    total_weight = []
    for key, prediction in predictions.items():
        loss, count = masked_l1(prediction, targets[key], pixel_masks[key])
        losses[key] = loss
        present = (count > 0).float()
        weighted.append(weights[key] * present * loss)
        total_weight.append(weights[key] * present)
    total = torch.stack(weighted).sum() / torch.stack(total_weight).sum().clamp(min=1e-12)
    return total, losses
