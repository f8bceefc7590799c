"""Time steps of a series: which dates are kept, padding, and the ``times`` rows the model sees.

A series is reduced to ``num_dates`` dates by cutting it into ``num_dates`` contiguous bins of
``T // num_dates`` dates, starting at an offset in ``0..T % num_dates`` (random in training, centred
at evaluation), and keeping one date per bin: a random one in training, at evaluation the one
closest to the bin's per-pixel nan-median. Dates flagged by the image's companion mask (e.g.
snow/cloud probability > 0) are avoided unless the whole bin is flagged, in which case the
least-flagged dates compete. Series shorter than ``num_dates`` are padded with zeros and
``valid=False`` (the reference implementation crashes on them). Everything is vectorised numpy:
it runs in data-loader workers for every sample.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from maestro.data.preprocess.config import EvalOffset, PreprocessConfig
from maestro.dates import PAD_DATE, year_and_doy
from maestro.sample import DATES, Sample


def nanmedian_over_axis1(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=1)`` via one sort, without warnings on all-NaN slices.

    numpy's nanmedian goes through masked arrays for this shape; a sort (NaN sorts last) plus
    two gathers is several times faster. All-NaN slices give NaN.
    """
    ordered = np.sort(values, axis=1)
    count = (~np.isnan(values)).sum(axis=1, keepdims=True)
    low = np.maximum((count - 1) // 2, 0)
    high = count // 2
    median = np.take_along_axis(ordered, low, axis=1) + np.take_along_axis(ordered, high, axis=1)
    median *= np.float32(0.5)
    return median[:, 0]


def median_distance(series: np.ndarray, flagged: np.ndarray | None = None) -> np.ndarray:
    """Closeness of each date to its bin's per-pixel nan-median: (n, s, C, H, W) -> (n, s).

    Distance = mean absolute difference over the pixels and bands that are comparable (not
    flagged in this date, not NaN, and with at least one unflagged observation in the bin).
    Flagged pixels are NaN for the median so clouds do not drag it. A date with nothing
    comparable gets +inf.
    """
    if flagged is not None:
        series = np.where(flagged[:, :, None], np.float32(np.nan), series)
    with np.errstate(invalid="ignore"):  # inf - inf in corrupt data: excluded below, then rejected
        median = nanmedian_over_axis1(series)
        diff = np.abs(series - median[:, None])
    comparable = np.isfinite(diff)
    total = np.where(comparable, diff, 0).sum(axis=(2, 3, 4), dtype=np.float64)
    count = comparable.sum(axis=(2, 3, 4))
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def bin_offset(
    num_available: int, num_dates: int, rng: np.random.Generator | None, eval_offset: EvalOffset
) -> int:
    """Start of the first bin: uniform in ``0..T % n`` in training, fixed at evaluation."""
    spare = num_available % num_dates
    if rng is not None:
        return int(rng.integers(0, spare + 1))
    return spare // 2 if eval_offset == "centre" else 0


def select_dates(
    values: np.ndarray,
    num_dates: int,
    *,
    rng: np.random.Generator | None,
    flagged: np.ndarray | None = None,
    eval_offset: EvalOffset = "centre",
) -> np.ndarray:
    """Indices (increasing) of the dates kept from a (T, C, H, W) series, one per bin.

    ``rng=None`` means evaluation (deterministic: the date closest to the bin median);
    otherwise a random date per bin. ``flagged`` (T, H, W) marks cloudy/snowy pixels: within a bin
    only the dates with the smallest flagged fraction compete, i.e. the clear dates when there
    are any. A series of at most ``num_dates`` dates is kept whole (callers pad it).
    """
    total = values.shape[0]
    if total <= num_dates:
        return np.arange(total)
    size = total // num_dates
    offset = bin_offset(total, num_dates, rng, eval_offset)
    bins = rearrange(np.arange(offset, offset + num_dates * size), "(n s) -> n s", n=num_dates)
    if size == 1:
        return bins[:, 0]
    candidates = np.ones(bins.shape, dtype=bool)
    if flagged is not None:
        cloudiness = rearrange(flagged, "t h w -> t (h w)").mean(axis=1)[bins]
        candidates = cloudiness == cloudiness.min(axis=1, keepdims=True)
    if rng is not None:
        score = np.where(candidates, rng.random(bins.shape), -1.0)
        choice = score.argmax(axis=1)
    else:
        window = values[bins[0, 0] : bins[-1, -1] + 1]
        series = rearrange(window, "(n s) c h w -> n s c h w", n=num_dates)
        window_flags = None
        if flagged is not None:
            window_flags = rearrange(
                flagged[bins[0, 0] : bins[-1, -1] + 1], "(n s) h w -> n s h w", n=num_dates
            )
        distance = np.where(candidates, median_distance(series, window_flags), np.inf)
        choice = distance.argmin(axis=1)
    return bins[np.arange(num_dates), choice]


def pad_series(
    values: np.ndarray, dates: np.ndarray, num_dates: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad a (T, C, H, W) series and its dates to ``num_dates`` with zeros; returns the valid mask."""
    length = values.shape[0]
    target = length if num_dates is None else max(num_dates, length)
    valid = np.zeros(target, dtype=bool)
    valid[:length] = True
    if target == length:
        return values, dates.astype(np.int32, copy=False), valid
    padded = np.zeros((target, *values.shape[1:]), dtype=values.dtype)
    padded[:length] = values
    padded_dates = np.full(target, PAD_DATE, dtype=np.int32)
    padded_dates[:length] = dates
    return padded, padded_dates, valid


def date_times(dates: np.ndarray, reference: int | None) -> np.ndarray:
    """(T,) int YYYYMMDD -> float32 (T, 3) ``[years since reference, day of year, hour]``.

    Years since the reference = fractional_year(date) - fractional_year(reference), computed as
    (year difference) + (doy difference) / 365.25 in float64 so that float32 rounding of years
    around 2020 (1e-4 year) does not leak into the offset. Hours are not in the metadata: 0.
    Padding dates give zero rows.
    """
    dates = np.asarray(dates)
    years, doy = year_and_doy(dates)
    valid = dates != PAD_DATE
    out = np.zeros((dates.shape[0], 3), dtype=np.float32)
    if reference is not None and reference != PAD_DATE:
        ref_year, ref_doy = year_and_doy(np.array([reference]))
        offset = (years.astype(np.float64) - ref_year[0]) + (doy.astype(np.float64) - ref_doy[0]) / 365.25
        out[:, 0] = np.where(valid, offset, 0.0)
    out[:, 1] = np.where(valid, doy, 0.0)
    return out


def dates_of_times(times: np.ndarray, reference: int, valid: np.ndarray) -> np.ndarray:
    """Inverse of :func:`date_times`: float (T, 3) times of the ``valid`` dates and the sample's
    reference date -> (T,) int32 YYYYMMDD (:data:`PAD_DATE` elsewhere), for labels and maps."""
    times, valid = np.asarray(times, dtype=np.float64), np.asarray(valid, dtype=bool)
    ref_year, ref_doy = (float(v[0]) for v in year_and_doy(np.array([reference])))
    doy = np.rint(times[:, 1])
    years = ref_year + np.rint(times[:, 0] - (doy - ref_doy) / 365.25)
    out = np.full(times.shape[0], PAD_DATE, dtype=np.int32)
    for index in np.flatnonzero(valid):
        day = np.datetime64(f"{int(years[index]):04d}-01-01") + np.timedelta64(int(doy[index]), "D")
        out[index] = int(str(day).replace("-", ""))
    return out


def reference_date(sample: Sample, config: PreprocessConfig) -> int | None:
    """The time origin: the reference modality's date if present, else the earliest input date."""
    dates = sample.get(DATES) or {}
    ref = dates.get(config.reference_modality)
    if ref is not None:
        ref = np.asarray(ref).reshape(-1)
        ref = ref[ref != PAD_DATE]
        if ref.size:
            return int(ref.min())
    candidates = [np.asarray(dates[k]).reshape(-1) for k in config.modalities if k in dates]
    valid = [d[d != PAD_DATE] for d in candidates]
    valid = [d for d in valid if d.size]
    return int(min(d.min() for d in valid)) if valid else None
