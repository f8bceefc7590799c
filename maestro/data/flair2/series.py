"""Sentinel-2 super-patch series of FLAIR #2: crop window, product dates, cloud filter, monthly means.

Pure numpy so each step is checked on hand-made arrays; the reader adds the file handling.
"""

from __future__ import annotations

import numpy as np

from maestro.data.flair2.layout import S2_MASK_BANDS

CLOUD_PROBABILITY = 50
"""A super-patch pixel counts as covered when its snow or cloud probability is at least this (%)."""
CLOUD_AREA = 0.6
"""A date is dropped when more than this fraction of the super-patch is covered."""
_SNOW, _CLOUD = S2_MASK_BANDS.index("snow"), S2_MASK_BANDS.index("cloud")


def crop_window(centroid: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` of the ``size`` x ``size`` super-patch around a
    centroid given as (row, col) in the super-area grid, as the baseline slices it:
    ``[row - size // 2, row + size // 2)`` (so the centroid is the pixel right of the middle)."""
    row, col = int(centroid[0]), int(centroid[1])
    half = size // 2
    return row - half, row - half + size, col - half, col - half + size


def window_inside(window: tuple[int, int, int, int], height: int, width: int) -> bool:
    r0, r1, c0, c1 = window
    return r0 >= 0 and c0 >= 0 and r1 <= height and c1 <= width


def covered_fraction(masks: np.ndarray, probability: int = CLOUD_PROBABILITY) -> np.ndarray:
    """Per date, the fraction of pixels whose snow or cloud probability is >= ``probability``.

    ``masks`` is (T, 2, h, w) with bands snow, cloud. A pixel both snowy and cloudy counts once
    (the baseline code adds the two counts, which can exceed the area; the paper speaks of the
    covered surface, so the union is used here).
    """
    covered = (masks[:, _SNOW] >= probability) | (masks[:, _CLOUD] >= probability)
    return covered.reshape(covered.shape[0], -1).mean(axis=1) if covered.size else np.zeros(len(masks))


def cloud_keep(
    masks: np.ndarray, probability: int = CLOUD_PROBABILITY, area: float = CLOUD_AREA
) -> np.ndarray:
    """Indices of the dates to keep: covered fraction at most ``area``.

    If every date would go, the least covered one is kept, so that a patch never ends with an
    empty series (the baseline code fails on such a patch instead).
    """
    fraction = covered_fraction(masks, probability)
    keep = np.flatnonzero(fraction <= area)
    if keep.size == 0 and fraction.size:
        keep = np.array([int(np.argmin(fraction))])
    return keep


def monthly_means(
    series: np.ndarray, masks: np.ndarray, dates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the dates of each calendar month, in time order, as the baseline's monthly option.

    Returns (series, masks, dates): means rounded back to each input's dtype, and each month's
    date as YYYYMM15 (the baseline dates a monthly mean on the 15th of its month).
    """
    months = (np.asarray(dates) // 100).astype(np.int64)
    order = np.unique(months)
    out_series, out_masks = [], []
    for month in order:
        pick = months == month
        out_series.append(_mean(series[pick], series.dtype))
        out_masks.append(_mean(masks[pick], masks.dtype))
    shape_s = (0, *series.shape[1:])
    shape_m = (0, *masks.shape[1:])
    return (
        np.stack(out_series) if out_series else np.zeros(shape_s, series.dtype),
        np.stack(out_masks) if out_masks else np.zeros(shape_m, masks.dtype),
        (order * 100 + 15).astype(np.int32),
    )


def _mean(stack: np.ndarray, dtype: np.dtype) -> np.ndarray:
    mean = stack.astype(np.float64).mean(axis=0)
    if np.issubdtype(dtype, np.integer):
        return np.rint(mean).astype(dtype)
    return mean.astype(dtype)
