"""Cloudy dates of a raw series, dropped or filled by interpolation in time: two of the three series
#29's downstream check trains crop type on (the third, restored by the gap-filling network, is
:meth:`maestro.api_gapfill.LoadedGapFill.restore_sample`).

Raw samples in, raw samples out (:mod:`maestro.sample`: on-disk units, dtype, band and date order),
so that a shard set can be rewritten with them (``shards fill``). A pixel is flagged when a band of
the series' companion mask (``s2_mask`` for ``s2``) exceeds ``cloud_threshold``, as date selection
flags it (:func:`~maestro.data.preprocess.transform.flagged_pixels`).

After a fill the companion mask is zeroed on the replaced pixels (:func:`with_restored`): a
downstream date selection (cloud avoidance, ``cloudy_date_fraction``) then treats them as clear,
which is the point of filling them. Flagged pixels left as they were (no clear date to
interpolate from) keep their mask.

The module sits beside the interpolation it reuses (:func:`~maestro.evaluation.gapfill.linear_interpolation`):
the data layer, above it, may not import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, reduce

from maestro.data.preprocess.transform import flagged_pixels, mask_companion
from maestro.dates import to_datetime64
from maestro.errors import DataError
from maestro.evaluation.gapfill import linear_interpolation
from maestro.sample import DATES, META, Sample

__all__ = [
    "CloudFill",
    "as_stored",
    "cloud_flags",
    "cloudy_dates",
    "drop_cloudy_dates",
    "fillable",
    "interpolate_cloudy",
    "with_restored",
]


@dataclass(frozen=True)
class CloudFill:
    """A raw sample with its cloudy dates dropped or its cloudy pixels filled."""

    sample: Sample
    """The new raw sample: the series (and its mask and dates) changed, every other entry the input's."""
    replaced: np.ndarray
    """``(T_out, H, W)`` bool: pixels whose values were filled (all False when dates are dropped)."""
    dropped: np.ndarray
    """``(T_in,)`` bool: dates of the input removed from the series (all False when filled)."""


def as_stored(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values (filled, restored) in the dtype the raster stores: rounded to the nearest
    integer and clipped to its range for an integer dtype, cast as they are otherwise."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def _mask_key(key: str) -> str:
    companion = mask_companion(key)
    if companion is None:
        raise ValueError(f"{key} has no companion cloud mask")
    return companion.key


def _patch(sample: Sample) -> str | None:
    meta = sample.get(META) or {}
    return meta.get("patch_id") if isinstance(meta, dict) else None


def cloud_flags(sample: Sample, key: str = "s2", cloud_threshold: float = 0.0) -> np.ndarray:
    """``(T, H, W)`` bool: pixels of the series ``key`` that its companion mask flags."""
    mask_key = _mask_key(key)
    for needed in (key, mask_key):
        if needed not in sample:
            raise DataError(f"{needed} is missing from the sample", patch_id=_patch(sample))
    series, mask = np.asarray(sample[key]), np.asarray(sample[mask_key])
    if (
        series.ndim != 4
        or mask.ndim != 4
        or mask.shape[0] != series.shape[0]
        or mask.shape[2:] != series.shape[2:]
    ):
        raise DataError(
            f"{mask_key} of shape {mask.shape} does not match {key} of shape {series.shape}",
            patch_id=_patch(sample),
        )
    return flagged_pixels(mask, cloud_threshold)


def cloudy_dates(flags: np.ndarray, fraction: float) -> np.ndarray:
    """``(T,)`` bool: dates whose flagged share of pixels exceeds ``fraction``. When that would be
    every date, the clearest one (the first of equals) is kept: a series is never emptied."""
    share = reduce(flags.astype(np.float64), "t h w -> t", "mean")
    cloudy = share > fraction
    if len(cloudy) and cloudy.all():
        cloudy[np.argmin(share)] = False
    return cloudy


def fillable(flags: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` bool: flagged pixels with at least one clear date to interpolate from."""
    if not len(flags):
        return flags
    return flags & ~reduce(flags, "t h w -> 1 h w", "min")


def _dates(sample: Sample, key: str, length: int) -> np.ndarray:
    dates = (sample.get(DATES) or {}).get(key)
    if dates is None or np.asarray(dates).reshape(-1).shape[0] != length:
        raise DataError(f"{key}: no dates, or not one per date of the series", patch_id=_patch(sample))
    return np.asarray(dates).reshape(-1)


def drop_cloudy_dates(
    sample: Sample, key: str = "s2", cloud_threshold: float = 0.0, fraction: float = 0.05
) -> CloudFill:
    """The series without its dates flagged on more than ``fraction`` of their pixels (the clearest
    date kept if all would go, :func:`cloudy_dates`): removed from the series, its mask and their
    ``dates``; the dates kept are the input's, bit for bit."""
    flags = cloud_flags(sample, key, cloud_threshold)
    dropped = cloudy_dates(flags, fraction)
    keep = ~dropped
    mask_key = _mask_key(key)
    out = dict(sample)
    dates = dict(sample.get(DATES) or {})
    for name in (key, mask_key):
        out[name] = np.asarray(sample[name])[keep]
        if name in dates:
            dates[name] = _dates(sample, name, len(keep))[keep]
    out[DATES] = dates
    return CloudFill(out, np.zeros((int(keep.sum()), *flags.shape[1:]), dtype=bool), dropped)


def interpolate_cloudy(sample: Sample, key: str = "s2", cloud_threshold: float = 0.0) -> CloudFill:
    """The series with each flagged pixel linearly interpolated in time between that pixel's
    nearest clear dates before and after it (the one clear value at the ends of the series), in
    float64 then rounded and clipped to an integer dtype. A pixel never clear is left as it is."""
    flags = cloud_flags(sample, key, cloud_threshold)
    raw = np.asarray(sample[key])
    order = np.argsort(_dates(sample, key, len(raw)), kind="stable")  # interpolation runs forward in time
    days = to_datetime64(_dates(sample, key, len(raw))[order]).astype(np.int64)
    filled = linear_interpolation(
        rearrange(torch.from_numpy(raw[order].astype(np.float64)), "t c h w -> 1 t c h w"),
        rearrange(torch.from_numpy(days), "t -> 1 t"),
        rearrange(torch.from_numpy(~flags[order]), "t h w -> 1 t h w"),
    )[0].numpy()[np.argsort(order)]
    replaced = fillable(flags)
    series = np.where(rearrange(replaced, "t h w -> t 1 h w"), as_stored(filled, raw.dtype), raw)
    return CloudFill(with_restored(sample, key, series, replaced), replaced, np.zeros(len(raw), dtype=bool))


def with_restored(sample: Sample, key: str, series: np.ndarray, replaced: np.ndarray) -> Sample:
    """``sample`` with the series ``key`` replaced by ``series`` and its companion mask zeroed where
    ``replaced`` (``(T, H, W)``): a filled pixel is clear to whatever reads the sample next."""
    mask_key = _mask_key(key)
    mask = np.asarray(sample[mask_key])
    cleared = np.where(rearrange(replaced, "t h w -> t 1 h w"), np.zeros((), dtype=mask.dtype), mask)
    return {**sample, key: series, mask_key: cleared}
