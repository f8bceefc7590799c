"""maestro.evaluation.cloudy: cloudy dates of a raw series dropped, or its cloudy pixels filled by
interpolation in time, against hand-computed values; everything else as it came in."""

from __future__ import annotations

import numpy as np
import pytest

from maestro.errors import DataError
from maestro.evaluation.cloudy import (
    cloud_flags,
    cloudy_dates,
    drop_cloudy_dates,
    fillable,
    interpolate_cloudy,
    with_restored,
)
from maestro.sample import DATES, META

DATES_S2 = np.array([20210101, 20210111, 20210121, 20210131], dtype=np.int32)


def sample(cloud: np.ndarray, values: np.ndarray | None = None, dates: np.ndarray = DATES_S2) -> dict:
    """A raw sample of ``len(dates)`` S2 dates, 2 x 2 px: ``cloud`` ``(T, 2, 2)`` cloud probability."""
    t = len(dates)
    if values is None:
        values = np.arange(t * 10 * 4, dtype=np.uint16).reshape(t, 10, 2, 2) * 10
    mask = np.zeros((t, 2, 2, 2), dtype=np.uint16)
    mask[:, 1] = cloud
    return {
        "s2": values,
        "s2_mask": mask,
        "s1_asc": np.ones((3, 2, 2, 2), dtype=np.float32),
        DATES: {"s2": dates.copy(), "s1_asc": np.array([20210105, 20210115, 20210125], dtype=np.int32)},
        META: {"patch_id": "P1"},
    }


def test_flags_are_mask_bands_above_the_threshold():
    cloud = np.zeros((4, 2, 2), dtype=np.uint16)
    cloud[1, 0, 0], cloud[2, 1, 1] = 30, 80
    raw = sample(cloud)
    raw["s2_mask"][3, 0, 0, 1] = 5  # snow
    flags = cloud_flags(raw, "s2", 0.0)
    assert flags.sum() == 3 and flags[1, 0, 0] and flags[2, 1, 1] and flags[3, 0, 1]
    assert cloud_flags(raw, "s2", 50.0).sum() == 1
    with pytest.raises(DataError, match="s2_mask is missing"):
        cloud_flags({k: v for k, v in raw.items() if k != "s2_mask"})


def test_drop_keeps_the_clear_dates_bit_for_bit_with_their_dates():
    cloud = np.zeros((4, 2, 2), dtype=np.uint16)
    cloud[1] = 50  # overcast
    cloud[3, 0, 0] = 10  # a quarter of the date
    raw = sample(cloud)
    raw[DATES]["s2_mask"] = DATES_S2.copy()
    result = drop_cloudy_dates(raw, fraction=0.05)
    assert result.dropped.tolist() == [False, True, False, True]
    out = result.sample
    assert np.array_equal(out["s2"], raw["s2"][[0, 2]]) and out["s2"].dtype == np.uint16
    assert np.array_equal(out["s2_mask"], raw["s2_mask"][[0, 2]])
    assert out[DATES]["s2"].tolist() == [20210101, 20210121] == out[DATES]["s2_mask"].tolist()
    assert out["s1_asc"] is raw["s1_asc"] and out[DATES]["s1_asc"] is raw[DATES]["s1_asc"]
    assert raw["s2"].shape[0] == 4 and raw[DATES]["s2"].shape == (4,)  # the input is left alone
    assert result.replaced.shape == (2, 2, 2) and not result.replaced.any()
    assert drop_cloudy_dates(raw, fraction=0.3).dropped.tolist() == [False, True, False, False]


def test_drop_keeps_the_clearest_date_when_every_date_is_cloudy():
    cloud = np.full((4, 2, 2), 50, dtype=np.uint16)
    cloud[2, 0, 0] = 0  # three quarters flagged, the others whole
    assert cloudy_dates(cloud > 0, 0.05).tolist() == [True, True, False, True]
    assert drop_cloudy_dates(sample(cloud)).sample["s2"].shape[0] == 1


def test_interpolation_fills_flagged_pixels_between_their_clear_dates():
    values = np.zeros((4, 10, 2, 2), dtype=np.uint16)
    values[:, :, 0, 0] = np.array([100, 60000, 60000, 401])[:, None]  # days 0, 10, 20, 30
    values[:, :, 0, 1] = np.array([7, 9, 11, 500])[:, None]
    values[:, :, 1, 1] = 3000
    cloud = np.zeros((4, 2, 2), dtype=np.uint16)
    cloud[1:3, 0, 0] = 90  # two cloudy dates between clear ones
    cloud[3, 0, 1] = 90  # the last date: the nearest clear value
    cloud[:, 1, 1] = 90  # never clear: left as it is
    raw = sample(cloud, values)
    result = interpolate_cloudy(raw)
    series = result.sample["s2"]
    assert series.dtype == np.uint16
    assert series[:, 0, 0, 0].tolist() == [100, 200, 301, 401]  # 100 + 301 * (1/3, 2/3), rounded
    assert series[:, 0, 0, 1].tolist() == [7, 9, 11, 11]
    assert (series[:, :, 1, 1] == 3000).all()
    assert result.replaced.sum() == 3 and not result.replaced[:, 1, 1].any()
    assert np.array_equal(result.replaced, fillable(cloud > 0))
    kept = ~np.broadcast_to(result.replaced[:, None], raw["s2"].shape)
    assert np.array_equal(series[kept], raw["s2"][kept])
    mask = result.sample["s2_mask"]
    assert (
        not mask[:, 1][result.replaced].any() and (mask[:, 1, 1, 1] == 90).all()
    )  # never-clear keeps its flag
    assert not result.dropped.any() and result.sample["s1_asc"] is raw["s1_asc"]


def test_interpolation_follows_the_dates_not_the_raster_order():
    cloud = np.zeros((4, 2, 2), dtype=np.uint16)
    cloud[1, 0, 0] = 90
    raw = sample(cloud)
    order = np.array([2, 0, 3, 1])  # the same series, stored out of chronological order
    shuffled = sample(cloud[order], raw["s2"][order], DATES_S2[order])
    straight, permuted = interpolate_cloudy(raw), interpolate_cloudy(shuffled)
    assert np.array_equal(permuted.sample["s2"], straight.sample["s2"][order])
    assert np.array_equal(permuted.replaced, straight.replaced[order])


def test_restored_series_clear_their_mask_only_where_replaced():
    cloud = np.full((4, 2, 2), 40, dtype=np.uint16)
    raw = sample(cloud)
    replaced = np.zeros((4, 2, 2), dtype=bool)
    replaced[0, 1, 0] = True
    series = raw["s2"] + 1
    out = with_restored(raw, "s2", series, replaced)
    assert out["s2"] is series and out["s2_mask"].dtype == np.uint16
    assert (out["s2_mask"][0, :, 1, 0] == 0).all() and out["s2_mask"][:, 1].sum() == 40 * 15
    assert (raw["s2_mask"][:, 1] == 40).all()
