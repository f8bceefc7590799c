"""Cloud removal with the masked autoencoder: cloudy dates of a series restored from everything else.

The pretrained MAE already reconstructs hidden tokens of one date from the other dates and
sensors, but in *normalised* target space (each patch and band group standardised), which cannot
give reflectances. The design here (docs/method.md, "Cloud removal"):

- The pixels to restore (cloudy ones, and in training clear ones hidden on purpose) are hidden
  from the encoder, token by token, as padding: their values are zeroed and no token attends to
  them. Everything else is seen: the clear pixels of the same date, the other dates, Sentinel-1,
  aerial, elevation.
- The prior of every hidden pixel is the per-pixel linear interpolation in time between the
  nearest clear dates (:func:`maestro.evaluation.gapfill.linear_interpolation`). The decoder puts
  its mask tokens at the hidden tokens, as in pretraining, plus an embedding of the prior's patches
  (so it knows what it corrects) and of the date's mean departure: how far its seen pixels are,
  on average, from what the interpolation would have said of them; at the seen tokens it adds
  each one's own departure. So the date's clear pixels tell how far off the interpolation is on
  that date. A new pixel head reads the hidden tokens, predicting
  a *correction in network units* (reflectance / 5000 for S2). The head starts at zero, so an untrained model is
  exactly the interpolation, and training pays only for what the other dates and the radar add;
  its loss is L1 on the absolute values of held-out clear dates.
- Only pixels that were cloudy (or, in evaluation, held out) are replaced: every other value of
  the series comes out bit-identical (:func:`fill_series`).

Data flow of :meth:`MaestroGapFill.forward`::

    inputs, hidden pixels -> encoder (their tokens as padding) -> decoder tokens (mask tokens + the
    prior's embedding there) -> correction head -> prior + correction  (B, T, C, H, W), network units
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from maestro.evaluation.gapfill import leave_one_out, linear_interpolation
from maestro.hub.pretrained import HubModel
from maestro.modalities import MODALITIES, Divide
from maestro.models.embed import ModalityEmbed
from maestro.models.gapfill_config import GapFillConfig
from maestro.models.mae import MaestroMAE
from maestro.models.pixels import PixelHead
from maestro.models.registry import register_model_type
from maestro.sample import FLAGS, INPUTS, TIMES, VALID

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
    """Pretrained MAE + a head that restores hidden pixels of ``config.target`` in absolute values."""

    def __init__(self, config: GapFillConfig):
        super().__init__()
        self.config = config
        self.mae = MaestroMAE(config.mae)
        spec, width = self.mae.specs[config.target], config.mae.decoder.width
        self.prior_embed = ModalityEmbed(spec, width)
        """The prior's patches as decoder tokens, added at the hidden tokens: what to correct."""
        self.departure_embed = ModalityEmbed(spec, width)
        """Each seen token's departure from what the interpolation would have said of it
        (:func:`~maestro.evaluation.gapfill.leave_one_out`), added at the seen tokens: how far the
        interpolation is off on this date, where the network can check it."""
        self.offset_embed = ModalityEmbed(spec, width)
        """The date's mean departure over its seen pixels, added at its hidden tokens."""
        self.correction = PixelHead(spec, width)
        for linear in self.correction.groups:  # starts as the interpolation prior
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, inputs: Tensors, times: Tensors, valid: Tensors, hidden: Tensor, prior: Tensor
    ) -> Tensor:
        """``hidden`` ``(B, T, H, W)``: pixels of the target to restore, never seen (a token with one
        hidden pixel is hidden whole); ``prior`` ``(B, T, C, H, W)`` the interpolation they start
        from. Returns ``(B, T, C, H, W)``: prior + correction, in the target's network units
        (meaningful on the hidden pixels)."""
        key = self.config.target
        encoder, spec = self.mae.encoder, self.mae.specs[key]
        inputs, times, valid = encoder.prepare(inputs, times, valid)
        tokens_hidden = hidden_tokens(hidden, spec.patch_size, spec.num_token_groups)
        padding = encoder.padding(valid)
        padding = {**padding, key: padding[key] | tokens_hidden}
        unseen = rearrange(hidden, "b t h w -> b t 1 h w")
        inputs = {**inputs, key: torch.where(unseen, torch.zeros_like(inputs[key]), inputs[key])}
        encoded = encoder.encode_sequences(inputs, times, padding, None, set())
        values = inputs[key]
        seen = rearrange(valid[key], "b t -> b t 1 1") & ~hidden
        departure = values - leave_one_out(values.float(), day_numbers(times[key]), seen).to(values.dtype)
        departure = torch.where(
            rearrange(seen, "b t h w -> b t 1 h w"), departure, torch.zeros_like(departure)
        )
        hint = self.prior_embed(prior.to(values.dtype)) * rearrange(tokens_hidden, "b t g n -> b t g n 1")
        hint = hint + self.departure_embed(departure) * rearrange(~padding[key], "b t g n -> b t g n 1")
        # the date's mean departure, over its seen pixels, at its hidden tokens: how far off the
        # interpolation is on that date where the network cannot check it
        count = reduce(seen, "b t h w -> b t 1 1 1", "sum").clamp(min=1)
        offset = reduce(departure, "b t c h w -> b t c 1 1", "sum") / count
        offset = offset.expand_as(departure).to(values.dtype)
        hint = hint + self.offset_embed(offset) * rearrange(tokens_hidden, "b t g n -> b t g n 1")
        tokens = self.mae.decoded_tokens(encoded, padding, padding, times, hints={key: hint})
        return prior.float() + self.correction(tokens[key]).float()


def hidden_tokens(hidden: Tensor, patch_size: int, groups: int) -> Tensor:
    """``(B, T, H, W)`` hidden pixels -> ``(B, T, G, N)`` tokens with at least one of them."""
    tokens = reduce(hidden, "b t (h p1) (w p2) -> b t (h w)", "max", p1=patch_size, p2=patch_size)
    return repeat(tokens, "b t n -> b t g n", g=groups)


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
    trusted: Tensor
    """``(B, T, H, W)`` bool: the pixels the interpolation read (:func:`restoration_plan`)."""


def restoration_plan(valid: Tensor, flags: Tensor, held_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(pixels to restore ``(B, T, H, W)``, pixels to trust ``(B, T, H, W)``).

    Flagged pixels of valid dates are restored, and ``held_out`` ones (evaluation, training: clear
    pixels hidden on purpose, :func:`hold_out`); trusted pixels, what the prior interpolates
    between, are every other pixel of a valid date."""
    pixels = rearrange(valid, "b t -> b t 1 1")
    restore = flags & pixels
    if held_out is not None:
        restore = restore | (held_out & pixels)
    return restore, pixels & ~restore


def fill_series(
    model: MaestroGapFill,
    inputs: Tensors,
    times: Tensors,
    valid: Tensors,
    flags: Tensor,
    held_out: Tensor | None = None,
) -> FilledSeries:
    """Restore the flagged (and ``held_out``) pixels of the model's target series; every other value
    is returned as it came in."""
    key = model.config.target
    series, days = inputs[key].float(), day_numbers(times[key])
    restore, trusted = restoration_plan(valid[key], flags, held_out)
    prior = linear_interpolation(series, days, trusted)
    prediction = model(inputs, times, valid, restore, prior)
    restored = torch.where(rearrange(restore, "b t h w -> b t 1 h w"), prediction, series)
    return FilledSeries(restored, restore, prediction, prior, trusted)


def _runs(length: int, size: int) -> list[slice]:
    """Consecutive runs of ``size`` dates covering ``length`` (the last one may be shorter)."""
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def _pad_dates(tensor: Tensor, size: int, fill: float | bool = 0) -> Tensor:
    """``(B, t, ...)`` -> ``(B, size, ...)`` along the date axis."""
    missing = size - tensor.shape[1]
    if missing <= 0:
        return tensor
    pad = torch.full(
        (tensor.shape[0], missing, *tensor.shape[2:]), fill, dtype=tensor.dtype, device=tensor.device
    )
    return torch.cat([tensor, pad], dim=1)


@torch.no_grad()
def restore_batch(model: MaestroGapFill, batch: Mapping[str, Tensors]) -> tuple[Tensor, Tensor]:
    """:func:`restore_series` of a collated batch of whole-series samples (with the target's
    ``flags``), moved to the model's device first."""
    device = next(model.parameters()).device
    inputs, times, valid = (
        {k: v.to(device) for k, v in batch[part].items()} for part in (INPUTS, TIMES, VALID)
    )
    return restore_series(model, inputs, times, valid, batch[FLAGS][model.config.target].to(device))


@torch.no_grad()
def restore_series(
    model: MaestroGapFill, inputs: Tensors, times: Tensors, valid: Tensors, flags: Tensor
) -> tuple[Tensor, Tensor]:
    """A whole target series, of any length, restored: (values ``(B, T, C, H, W)`` network units,
    replaced ``(B, T, H, W)``).

    The network reads ``num_dates`` dates at a time, but the prior should see every clear date of
    the series: it is computed over all of them, then each run of ``num_dates`` consecutive dates
    with a pixel to restore is corrected with the other inputs whole (a shorter last run is padded).
    The values are the prior, corrected, on every date: only the ``replaced`` pixels are meant to
    be taken from them."""
    key = model.config.target
    series, days = inputs[key].float(), day_numbers(times[key])
    restore, trusted = restoration_plan(valid[key], flags)
    prior = linear_interpolation(series, days, trusted)
    restored = prior.clone()
    size = model.mae.specs[key].num_dates
    for run in _runs(series.shape[1], size):
        if not restore[:, run].any():
            continue
        prediction = model(
            {**inputs, key: _pad_dates(series[:, run], size)},
            {**times, key: _pad_dates(times[key][:, run], size)},
            {**valid, key: _pad_dates(valid[key][:, run], size, False)},
            _pad_dates(restore[:, run], size, False),
            _pad_dates(prior[:, run], size),
        )
        restored[:, run] = prediction[:, : run.stop - run.start]
    return restored, restore


def hold_out(
    valid: Tensor,
    flags: Tensor,
    fraction: float,
    generator: torch.Generator | None = None,
    whole_dates: float = 0.5,
) -> Tensor:
    """``(B, T, H, W)`` clear pixels hidden on purpose: the training targets and the evaluation's
    held-out pixels (cloudy pixels never are).

    About ``fraction`` of each sample's clear dates (valid, nothing flagged) are drawn, at least one
    when the sample has two or more, always leaving one clear date whole. On each, with probability
    ``whole_dates`` every pixel is held out (an overcast date: only the other dates and sensors
    tell), otherwise a rectangle of half to all of each side (a cloud: the date's own clear pixels
    tell too)."""
    batch, dates, height, width = flags.shape
    device = flags.device
    clear = valid & ~reduce(flags, "b t h w -> b t", "max")
    count = clear.sum(dim=1, keepdim=True)
    take = torch.minimum(torch.clamp(torch.floor(count * fraction), min=1), count - 1).clamp(min=0)
    scores = torch.rand(clear.shape, generator=generator, device=device)
    rank = torch.where(clear, scores, torch.full_like(scores, 2.0)).argsort(dim=1).argsort(dim=1)
    chosen = clear & (rank < take)
    draw = torch.rand((batch, dates, 5), generator=generator, device=device)
    whole = draw[..., 0] < whole_dates
    sides = torch.tensor([height, width], device=device, dtype=draw.dtype)
    size = torch.ceil(sides / 2 + draw[..., 1:3] * sides / 2).clamp(max=sides)  # (B, T, 2)
    start = torch.floor(draw[..., 3:5] * (sides - size + 1))
    end = start + size
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (
        (rows >= start[..., 0, None, None])
        & (rows < end[..., 0, None, None])
        & (cols >= start[..., 1, None, None])
        & (cols < end[..., 1, None, None])
    )
    return rearrange(chosen, "b t -> b t 1 1") & (inside | rearrange(whole, "b t -> b t 1 1"))
