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


def _band_range(group: tuple[int, ...]) -> slice | None:
    """The group as a slice when its bands are consecutive (no index tensor, no host copy)."""
    start = group[0]
    return (
        slice(start, start + len(group)) if tuple(group) == tuple(range(start, start + len(group))) else None
    )


def normalise_patches(
    images: Tensor, patch_size: int, groups: tuple[tuple[int, ...], ...], eps: float = NORM_EPS
) -> Tensor:
    """``(B, T, C, H, W)`` -> same shape, each (patch, band group) standardised on its own.

    Consecutive band groups that tile the channels in order (every registry default) are
    standardised on slices and concatenated: no zero fill, no scatter, and no index tensor copied
    from the host (a blocking copy, i.e. a host-device sync per group). Other layouts fall back
    to indexing, with a non-blocking index copy.
    """
    height = images.shape[-2] // patch_size
    patches = rearrange(
        images.float(), "b t c (h p1) (w p2) -> b t h w c (p1 p2)", p1=patch_size, p2=patch_size
    )

    def standardise(values: Tensor) -> Tensor:
        mean = values.mean(dim=(-2, -1), keepdim=True)
        var = values.var(dim=(-2, -1), keepdim=True, unbiased=True)
        return (values - mean) / torch.sqrt(var + eps)

    ranges = [_band_range(group) for group in groups]
    stops = [0] + [r.stop for r in ranges if r is not None]
    if None not in ranges and [r.start for r in ranges] == stops[:-1] and stops[-1] == patches.shape[-2]:
        parts = [standardise(patches[..., r, :]) for r in ranges]
        normalised = torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]
    else:
        normalised = torch.zeros_like(patches)
        for group, band_range in zip(groups, ranges, strict=True):
            if band_range is not None:
                normalised[..., band_range, :] = standardise(patches[..., band_range, :])
            else:
                index = torch.tensor(group).to(images.device, non_blocking=True)
                normalised[..., index, :] = standardise(patches.index_select(-2, index))
    return rearrange(
        normalised, "b t h w c (p1 p2) -> b t c (h p1) (w p2)", h=height, p1=patch_size, p2=patch_size
    )


def denormalise(
    normalised: Tensor,
    images: Tensor,
    patch_size: int,
    groups: tuple[tuple[int, ...], ...],
    eps: float = NORM_EPS,
) -> Tensor:
    """Inverse of :func:`normalise_patches`, with the statistics of ``images``.

    Puts a prediction made in normalised target space back into input units, using each patch's
    true mean and spread (the model never predicts those).
    """
    pattern = "b t c (h p1) (w p2) -> b t h w c (p1 p2)"
    values = rearrange(images.float(), pattern, p1=patch_size, p2=patch_size)
    pred = rearrange(normalised.float(), pattern, p1=patch_size, p2=patch_size)
    out = torch.empty_like(pred)
    for group in groups:
        index = list(group)
        mean = values[..., index, :].mean(dim=(-2, -1), keepdim=True)
        std = torch.sqrt(values[..., index, :].var(dim=(-2, -1), keepdim=True, unbiased=True) + eps)
        out[..., index, :] = pred[..., index, :] * std + mean
    return rearrange(
        out,
        "b t h w c (p1 p2) -> b t c (h p1) (w p2)",
        h=images.shape[-2] // patch_size,
        p1=patch_size,
        p2=patch_size,
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
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """(total, per-modality losses, per-modality pixel counts); see :func:`weighted_total`."""
    losses: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for key, prediction in predictions.items():
        losses[key], counts[key] = masked_l1(prediction, targets[key], pixel_masks[key])
    return weighted_total(losses, counts, weights), losses, counts


def weighted_total(
    losses: Mapping[str, Tensor], counts: Mapping[str, Tensor], weights: Mapping[str, float]
) -> Tensor:
    """Per-modality losses weighted by ``weights`` (token counts); a modality without any masked
    valid pixel (``count == 0``) gets weight 0. Shared by the training step and the validation
    loss pooled over a whole split."""
    weighted, total_weight = [], []
    for key, loss in losses.items():
        present = (counts[key] > 0).float()
        weighted.append(weights[key] * present * loss)
        total_weight.append(weights[key] * present)
    return torch.stack(weighted).sum() / torch.stack(total_weight).sum().clamp(min=1e-12)
