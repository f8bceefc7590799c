"""What the baseline does to a model sample before its encoders: standardisation, day offsets, months.

The model sample (:mod:`maestro.sample`) is shared with MAESTRO, so both models read the same
batches. Two of its conventions differ from what the Swin-UTAE paper feeds its networks:

* **Single-date inputs** arrive scaled by MAESTRO's fixed rules (aerial / 255, elevation / 1000
  with the DTM channel replaced by 30 x (DSM - DTM), SPOT / 2000, ...), whereas the baseline
  standardises raw values with the dataset statistics of the registry. Every single-date scaling
  of the registry is affine in the raw values, so :class:`Standardise` undoes it exactly and
  standardises in one fixed linear map per pixel: ``z = (raw - mean) / std`` with ``raw`` recovered
  from the scaled bands (for elevation the DTM is recovered from DSM and the height channel). The
  map is derived from the registry's own scaling objects, probed at construction, so a change of a
  scaling rule or of the statistics cannot leave the two out of step.
* **Dates** are ``times`` rows ``[years since the reference date, day of year, hour]``. The U-TAE
  codes day offsets from May 15 of the acquisition year; the day of year is exact in the rows, the
  year is not (only offsets to the aerial date are), so the offset is ``day_of_year - 134`` (May 15
  in a common year). In a leap year every date from March on is one day late: a uniform one-day
  shift, far below what a code with period 1000 days resolves. Padded dates are never read.

Time series keep MAESTRO's scaling (S2 / 5000, S1 log-backscatter / 5): the registry publishes no
statistics for them and the U-TAE normalises its inputs per date (GroupNorm) anyway.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES

MONTH_STARTS = (31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
"""0-based day of year of Feb 1 ... Dec 1 in a common year."""


def _affine_form(key: str, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``A`` (C, C) and ``c`` (C,) with ``scaling(raw) = A @ raw + c``, probed from the registry."""
    entry = MODALITIES[key]
    channels = len(bands)
    if entry.scaling is None:
        return np.eye(channels), np.zeros(channels)

    def scale(raw: np.ndarray) -> np.ndarray:
        values = raw.astype(np.float32).reshape(-1, channels, 1, 1)
        return np.asarray(entry.scaling(values.copy(), bands), dtype=np.float64).reshape(-1, channels)

    probes = np.concatenate([np.zeros((1, channels)), 100.0 * np.eye(channels)])
    outputs = scale(probes)
    offset = outputs[0]
    matrix = (outputs[1:] - offset).T / 100.0
    check = np.random.default_rng(0).uniform(0, 1000, size=(4, channels))
    if not np.allclose(scale(check), check @ matrix.T + offset, rtol=1e-4, atol=1e-4):
        raise ConfigError(f"{key}: its registry scaling is not affine, so the baseline cannot standardise it")
    return matrix, offset


class Standardise(nn.Module):
    """MAESTRO-scaled ``(B, C, H, W)`` -> ``(raw - mean) / std`` with the registry's statistics.

    A fixed 1x1 linear map (buffers, not saved: they follow the registry). Bands are in network
    order (``bands``); the registry's statistics are in on-disk order and are reordered here.
    """

    def __init__(self, key: str, bands: tuple[str, ...]):
        super().__init__()
        entry = MODALITIES[key]
        if entry.mean is None or entry.std is None:
            raise ConfigError(f"{key}: the registry has no dataset statistics to standardise it with")
        order = entry.band_indices(bands)
        mean = np.asarray(entry.mean, dtype=np.float64)[order]
        std = np.asarray(entry.std, dtype=np.float64)[order]
        matrix, offset = _affine_form(key, bands)
        inverse = np.linalg.inv(matrix)
        weight = inverse / std[:, None]
        bias = -(inverse @ offset + mean) / std
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32), persistent=False)
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("oc,bchw->bohw", self.weight.to(x.dtype), x)
        return out + self.bias.to(x.dtype)[:, None, None]


def day_offsets(times: Tensor, reference_day: int) -> Tensor:
    """``times (B, T, 3)`` -> day offsets ``(B, T)`` from ``reference_day`` of the acquisition year."""
    return times[..., 1] - reference_day


def month_of(day_of_year: Tensor) -> Tensor:
    """0-based month (0..11) of a 0-based day of year, common-year calendar."""
    starts = torch.tensor(MONTH_STARTS, dtype=day_of_year.dtype, device=day_of_year.device)
    return torch.bucketize(day_of_year.contiguous(), starts, right=True)


def monthly_average(x: Tensor, times: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Average each calendar month's valid dates: ``(B, T, C, H, W)`` -> ``(B, 12, C, H, W)``.

    Returns the monthly values, ``times`` rows carrying the mean day of year of each month's dates
    (other columns 0) and ``valid`` (months without a valid date are padding, with zero values).
    Months are taken from the day of year, so a series spanning two years shares its months.
    """
    valid = valid.bool()
    weights = torch.nn.functional.one_hot(month_of(times[..., 1]), 12).to(x.dtype) * valid[..., None].to(
        x.dtype
    )
    counts = weights.sum(dim=1)
    safe = counts.clamp_min(1.0)
    values = torch.where(valid[:, :, None, None, None], x, 0.0)
    monthly = torch.einsum("btm,btchw->bmchw", weights, values) / safe[:, :, None, None, None]
    days = torch.einsum("btm,bt->bm", weights, torch.where(valid, times[..., 1], 0.0).to(x.dtype)) / safe
    monthly_times = torch.zeros(*days.shape, 3, dtype=times.dtype, device=times.device)
    monthly_times[..., 1] = days.to(times.dtype)
    return monthly, monthly_times, counts > 0
