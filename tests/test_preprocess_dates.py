"""Date selection, padding and time encoding of a series (pure functions, no samples needed)."""

from __future__ import annotations

import numpy as np
import pytest

from maestro.data.preprocess import nanmedian_over_axis1, select_dates


def _bins(total: int, n: int, offset: int) -> np.ndarray:
    size = total // n
    return offset + np.arange(n * size).reshape(n, size)


@pytest.mark.parametrize(("total", "n"), [(35, 16), (146, 16), (9, 4), (17, 4)])
def test_one_date_per_bin(total: int, n: int) -> None:
    values = np.random.default_rng(0).random((total, 2, 3, 3)).astype(np.float32)
    offsets = set()
    for seed in range(30):
        keep = select_dates(values, n, rng=np.random.default_rng(seed))
        assert keep.shape == (n,) and (np.diff(keep) > 0).all()
        offset = next(o for o in range(total % n + 1) if (keep[:, None] == _bins(total, n, o)).any(1).all())
        offsets.add(offset)
        assert ((keep[:, None] == _bins(total, n, offset)).sum(axis=1) == 1).all()
    assert offsets <= set(range(total % n + 1))
    evaluated = select_dates(values, n, rng=None)
    assert ((evaluated[:, None] == _bins(total, n, (total % n) // 2)).sum(axis=1) == 1).all()


def test_eval_picks_date_closest_to_bin_median() -> None:
    # 4 bins of 3 dates with levels (0, 5, 10), (7, 1, 2), ...: the middle value is the median.
    levels = np.array([[0, 5, 10], [7, 1, 2], [3, 3.2, 9], [4, 8, 6]], dtype=np.float32).reshape(-1)
    values = np.broadcast_to(levels[:, None, None, None], (12, 2, 3, 3)).copy()
    keep = select_dates(values, 4, rng=None)
    np.testing.assert_array_equal(keep, [1, 5, 7, 11])


def test_eval_matches_bruteforce_nanmedian_reference() -> None:
    rng = np.random.default_rng(3)
    values = rng.random((40, 3, 4, 4)).astype(np.float32)
    keep = select_dates(values, 8, rng=None, eval_offset="start")
    series = values.reshape(8, 5, 3, 4, 4)
    distance = np.abs(series - np.nanmedian(series, axis=1, keepdims=True)).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(keep, np.arange(8) * 5 + distance.argmin(axis=1))


def test_nanmedian_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    values = rng.random((3, 6, 2, 5)).astype(np.float32)
    values[rng.random(values.shape) < 0.4] = np.nan
    values[0, :, 0, 0] = np.nan  # an all-NaN slice
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(values, axis=1)
    np.testing.assert_allclose(nanmedian_over_axis1(values), expected, rtol=1e-6, equal_nan=True)


def test_cloudy_dates_avoided_unless_whole_bin_cloudy() -> None:
    values = np.random.default_rng(5).random((12, 2, 4, 4)).astype(np.float32)
    flagged = np.zeros((12, 4, 4), dtype=bool)
    flagged[[0, 1], 0, 0] = True  # bin 0 (dates 0..2): only date 2 is clear
    flagged[3:6, 1, 1] = True  # bin 1: all cloudy, date 4 the least (1 pixel vs 2)
    flagged[[3, 5], 2, 2] = True
    for rng in [None, *(np.random.default_rng(s) for s in range(40))]:
        keep = select_dates(values, 4, rng=rng, flagged=flagged)
        assert keep[0] == 2 and keep[1] == 4
        assert not flagged[keep[2:]].any()


def test_dates_of_times_inverts_date_times_across_years_and_skips_padding() -> None:
    from maestro.data.preprocess import date_times, dates_of_times
    from maestro.dates import PAD_DATE

    dates = np.array([20201231, 20210101, 20210615, 20221130, PAD_DATE], dtype=np.int32)
    valid = dates != PAD_DATE
    for reference in (20210615, 20200101, 20221231):
        back = dates_of_times(date_times(dates, reference), reference, valid)
        assert back.tolist() == dates.tolist()
