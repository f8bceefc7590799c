"""Cloud removal with the masked autoencoder: cloudy dates of a series restored from everything else.

The pretrained MAE already reconstructs hidden tokens of one date from the other dates and
sensors, but in *normalised* target space (each patch and band group standardised), which cannot
give reflectances. The design here (docs/method.md, "Cloud removal"):

- The dates to restore (cloudy ones, and in training clear ones hidden on purpose) are hidden from
  the encoder as padding: their values are zeroed and no token attends to them. Every other input
  (Sentinel-1, the clear dates, aerial, elevation) is seen whole.
- The prior of every hidden pixel is the per-pixel linear interpolation in time between the
  nearest clear dates (:func:`maestro.evaluation.gapfill.linear_interpolation`). The decoder puts
  its mask tokens at the hidden dates, as in pretraining, plus an embedding of the prior's patches
  (so it knows what it corrects), and a new pixel head reads them, predicting a *correction in
  network units* (reflectance / 5000 for S2). The head starts at zero, so an untrained model is
  exactly the interpolation, and training pays only for what the other dates and the radar add;
  its loss is L1 on the absolute values of held-out clear dates.
- Only pixels that were cloudy (or, in evaluation, held out) are replaced: every other value of
  the series comes out bit-identical (:func:`fill_series`).

Data flow of :meth:`MaestroGapFill.forward`::

    inputs, hidden dates -> encoder (hidden dates as padding) -> decoder tokens (mask tokens there)
    -> correction head -> prior + correction  (B, T, C, H, W), network units
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from maestro.evaluation.gapfill import linear_interpolation
from maestro.hub.pretrained import HubModel
from maestro.modalities import MODALITIES, Divide
from maestro.models.embed import ModalityEmbed
from maestro.models.gapfill_config import GapFillConfig
from maestro.models.mae import MaestroMAE
from maestro.models.pixels import PixelHead
from maestro.models.registry import register_model_type

Tensors = Mapping[str, Tensor]
DAYS_PER_YEAR = 365.25
REFLECTANCE_DN = 10_000.0
"""Sentinel-2 L2A digital numbers per unit of reflectance."""


def to_reflectance(key: str) -> float:
    """Factor from a series' network units to reflectance (S2: x 5000 / 10000)."""
    scaling = MODALITIES[key].scaling
    if not isinstance(scaling, Divide):
        raise ValueError(f"{key} is not a reflectance series scaled by a division")
    return scaling.factor / REFLECTANCE_DN


def day_numbers(times: Tensor) -> Tensor:
    """``(B, T, 3)`` model times ``[years since reference, day of year, hour]`` -> ``(B, T)`` days."""
    return times[..., 0] * DAYS_PER_YEAR + times[..., 1]


@register_model_type("maestro-gapfill")
class MaestroGapFill(nn.Module, HubModel):
    """Pretrained MAE + a head that restores hidden dates of ``config.target`` in absolute values."""

    def __init__(self, config: GapFillConfig):
        super().__init__()
        self.config = config
        self.mae = MaestroMAE(config.mae)
        spec, width = self.mae.specs[config.target], config.mae.decoder.width
        self.prior_embed = ModalityEmbed(spec, width)
        """The prior's patches as decoder tokens, added at the hidden dates: what to correct."""
        self.correction = PixelHead(spec, width)
        for linear in self.correction.groups:  # starts as the interpolation prior
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, inputs: Tensors, times: Tensors, valid: Tensors, hidden: Tensor, prior: Tensor
    ) -> Tensor:
        """``hidden`` ``(B, T)``: dates of the target restored (never seen); ``prior`` ``(B, T, C, H, W)``
        the interpolation they start from. Returns ``(B, T, C, H, W)``: prior + correction, in the
        target's network units (meaningful on the hidden dates)."""
        key = self.config.target
        encoder = self.mae.encoder
        seen = {**valid, key: valid[key] & ~hidden}
        inputs, times, seen = encoder.prepare(inputs, times, seen)
        padding = encoder.padding(seen)
        encoded = encoder.encode_sequences(inputs, times, padding, None, set())
        hint = self.prior_embed(prior.to(inputs[key].dtype)) * rearrange(hidden, "b t -> b t 1 1 1")
        tokens = self.mae.decoded_tokens(encoded, padding, padding, times, hints={key: hint})
        return prior.float() + self.correction(tokens[key]).float()


@dataclass(frozen=True)
class FilledSeries:
    """A series with its cloudy (or held-out) pixels restored."""

    series: Tensor
    """``(B, T, C, H, W)`` network units: the input, with the ``replaced`` pixels restored."""
    replaced: Tensor
    """``(B, T, H, W)`` bool: pixels whose values come from the model."""
    prediction: Tensor
    """``(B, T, C, H, W)`` the model's values on every date (for figures and metrics)."""
    prior: Tensor
    """``(B, T, C, H, W)`` the linear interpolation baseline."""


def restoration_plan(
    valid: Tensor, flags: Tensor, held_out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(hidden dates ``(B, T)``, pixels to replace ``(B, T, H, W)``, pixels to trust ``(B, T, H, W)``).

    A valid date with any flagged pixel is hidden and its flagged pixels are replaced; ``held_out``
    dates (evaluation, training) are hidden and replaced whole. Trusted pixels (what the prior
    interpolates between) are the unflagged pixels of valid dates that are not hidden."""
    cloudy_dates = reduce(flags, "b t h w -> b t", "max") & valid
    hidden = cloudy_dates if held_out is None else cloudy_dates | (held_out & valid)
    pixels = rearrange(valid, "b t -> b t 1 1")
    replace = flags & pixels
    if held_out is not None:
        replace = replace | (rearrange(held_out & valid, "b t -> b t 1 1") & torch.ones_like(flags))
    trusted = pixels & ~flags & ~rearrange(hidden, "b t -> b t 1 1")
    return hidden, replace, trusted


def fill_series(
    model: MaestroGapFill,
    inputs: Tensors,
    times: Tensors,
    valid: Tensors,
    flags: Tensor,
    held_out: Tensor | None = None,
) -> FilledSeries:
    """Restore the flagged pixels (and ``held_out`` dates) of the model's target series; every other
    value is returned as it came in."""
    key = model.config.target
    series, days = inputs[key].float(), day_numbers(times[key])
    hidden, replace, trusted = restoration_plan(valid[key], flags, held_out)
    prior = linear_interpolation(series, days, trusted)
    prediction = model(inputs, times, valid, hidden, prior)
    restored = torch.where(rearrange(replace, "b t h w -> b t 1 h w"), prediction, series)
    return FilledSeries(restored, replace, prediction, prior)


def hold_out_clear_dates(
    valid: Tensor, flags: Tensor, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """``(B, T)`` bool: about ``fraction`` of each sample's clear dates (valid, nothing flagged),
    drawn at random, at least one when the sample has two or more, always leaving one clear date
    visible. These are the training targets and the evaluation's held-out dates: cloudy dates never are."""
    clear = valid & ~reduce(flags, "b t h w -> b t", "max")
    count = clear.sum(dim=1, keepdim=True)
    take = torch.clamp(torch.floor(count * fraction), min=1)
    take = torch.minimum(take, count - 1).clamp(min=0)
    scores = torch.rand(clear.shape, generator=generator, device=clear.device)
    scores = torch.where(clear, scores, torch.full_like(scores, 2.0))
    rank = scores.argsort(dim=1).argsort(dim=1)
    return clear & (rank < take)
