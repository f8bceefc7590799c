"""Gap-filling baselines and scores against values computed by hand on tiny series."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from maestro.evaluation.gapfill import (
    S2_BANDS,
    GapFillMetrics,
    GapFillScores,
    linear_interpolation,
    ndvi,
    nearest_clear,
    scores_table,
    ssim_images,
)


def _pixels(*columns: list[float]) -> torch.Tensor:
    """One-band series ``(1, T, 1, 1, W)``, one list of T values per pixel."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, -1, 1, 1, len(columns))


def _known(*columns: list[bool]) -> torch.Tensor:
    return torch.tensor(columns).T.reshape(1, -1, 1, len(columns))


def test_linear_interpolation_between_one_sided_and_without_known_dates():
    days = torch.tensor([[0.0, 10.0, 20.0, 40.0]])
    series = _pixels([1.0, 9.0, 9.0, 5.0], [9.0, 2.0, 9.0, 9.0], [7.0, 8.0, 9.0, 10.0], [0.0, 9.0, 6.0, 9.0])
    known = _known(
        [True, False, False, True],  # between day 0 (1.0) and day 40 (5.0)
        [False, True, False, False],  # one known date: it fills both sides
        [False, False, False, False],  # nothing known: the input stays
        [True, False, True, False],  # known at days 0 and 20, then only before
    )
    filled = linear_interpolation(series, days, known)
    expected = _pixels(
        [1.0, 2.0, 3.0, 5.0], [2.0, 2.0, 2.0, 2.0], [7.0, 8.0, 9.0, 10.0], [0.0, 3.0, 6.0, 6.0]
    )
    torch.testing.assert_close(filled, expected, rtol=0, atol=1e-6)


def test_known_dates_come_back_bit_identical_and_per_band():
    generator = torch.Generator().manual_seed(0)
    series = torch.rand(2, 6, 3, 4, 5, generator=generator)
    days = torch.cumsum(torch.rand(2, 6, generator=generator) * 20 + 1, dim=1) + 18000
    known = torch.rand(2, 6, 4, 5, generator=generator) > 0.5
    for fill in (linear_interpolation, nearest_clear):
        out = fill(series, days, known)
        assert out.dtype == series.dtype and out.shape == series.shape
        assert torch.equal(
            out[known.unsqueeze(2).expand_as(series)], series[known.unsqueeze(2).expand_as(series)]
        )
    # bands are filled independently with the same weights: a band that is twice another stays so
    doubled = torch.cat([series[:, :, :1], 2 * series[:, :, :1]], dim=2)
    out = linear_interpolation(doubled, days, known)
    torch.testing.assert_close(out[:, :, 1], 2 * out[:, :, 0])


def _reference(series: torch.Tensor, days: torch.Tensor, known: torch.Tensor, linear: bool) -> torch.Tensor:
    """Date-by-date loop over every pixel: the definition, written plainly."""
    out = series.clone()
    b_, t_, _, h_, w_ = series.shape
    for b in range(b_):
        for y in range(h_):
            for x in range(w_):
                dates = [t for t in range(t_) if known[b, t, y, x]]
                for t in range(t_):
                    if known[b, t, y, x] or not dates:
                        continue
                    before = [s for s in dates if s < t]
                    after = [s for s in dates if s > t]
                    if linear and before and after:
                        s, e = before[-1], after[0]
                        f = float((days[b, t] - days[b, s]) / (days[b, e] - days[b, s]))
                        out[b, t, :, y, x] = series[b, s, :, y, x] + f * (
                            series[b, e, :, y, x] - series[b, s, :, y, x]
                        )
                    elif linear:
                        out[b, t, :, y, x] = series[b, (before or after)[-1 if before else 0], :, y, x]
                    else:
                        nearest = min(dates, key=lambda s: (abs(float(days[b, s] - days[b, t])), s))
                        out[b, t, :, y, x] = series[b, nearest, :, y, x]
    return out


def test_both_baselines_match_a_plain_loop_on_random_series():
    generator = torch.Generator().manual_seed(1)
    series = torch.rand(2, 7, 2, 3, 3, generator=generator, dtype=torch.float64)
    days = torch.cumsum(torch.randint(1, 15, (2, 7), generator=generator), dim=1).double()
    known = torch.rand(2, 7, 3, 3, generator=generator) > 0.6
    torch.testing.assert_close(
        linear_interpolation(series, days, known), _reference(series, days, known, True)
    )
    torch.testing.assert_close(nearest_clear(series, days, known), _reference(series, days, known, False))


def test_nearest_clear_takes_the_closest_known_date_and_the_earlier_on_a_tie():
    series = _pixels([1.0, 0.0, 0.0, 4.0], [1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0])
    days = torch.tensor([[0.0, 4.0, 10.0, 20.0]])
    known = _known(
        [True, False, False, True],  # day 4: 4 from day 0, 16 from day 20; day 10: 10 and 10, a tie
        [True, False, True, False],  # day 4: 4 after day 0, 6 before day 10; day 20: only before
        [False, True, False, False],  # one known date: both sides
        [False, False, False, False],  # none: the input
    )
    expected = _pixels([1.0, 1.0, 1.0, 4.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [5.0, 6.0, 7.0, 8.0])
    assert torch.equal(nearest_clear(series, days, known), expected)


def test_date_masks_broadcast_and_padded_days_stay_finite():
    series = torch.arange(8.0).reshape(1, 4, 1, 1, 2)
    days = torch.tensor([[10.0, 20.0, 30.0, 0.0]])  # the last date is padding: its day means nothing
    known = torch.tensor([[True, False, True, False]])
    for fill in (linear_interpolation, nearest_clear):
        out = fill(series, days, known)
        assert bool(out.isfinite().all())
    torch.testing.assert_close(linear_interpolation(series, days, known)[0, 1], series[0, [0, 2]].mean(0))


def test_bad_shapes_are_refused_naming_the_argument():
    series = torch.zeros(1, 3, 2, 4, 4)
    with pytest.raises(ValueError, match="days"):
        linear_interpolation(series, torch.zeros(1, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="known"):
        nearest_clear(series, torch.zeros(1, 3), torch.ones(1, 3, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="known must be a bool"):
        nearest_clear(series, torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="series"):
        linear_interpolation(series[0], torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))


def test_ndvi_of_red_and_nir():
    pixel = torch.zeros(len(S2_BANDS), 1, 2)
    pixel[S2_BANDS.index("B4")] = torch.tensor([[0.1, 0.0]])
    pixel[S2_BANDS.index("B8")] = torch.tensor([[0.3, 0.0]])
    values = ndvi(pixel)
    assert values[0, 0] == pytest.approx(0.5) and math.isnan(values[0, 1])


def _two_pixels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two bands, two dates of two pixels; only the first date is scored, the second is NaN."""
    truth = torch.tensor([[0.3, 0.2], [0.4, 0.2]]).reshape(1, 1, 2, 1, 2)  # pixels (0.3, 0.4), (0.2, 0.2)
    prediction = torch.tensor([[0.4, 0.2], [0.3, 0.4]]).reshape(1, 1, 2, 1, 2)  # (0.4, 0.3), (0.2, 0.4)
    truth = torch.cat([truth, torch.rand_like(truth)], dim=1)
    prediction = torch.cat([prediction, torch.full_like(prediction, math.nan)], dim=1)
    mask = torch.tensor([True, False]).reshape(1, 2, 1, 1).expand(1, 2, 1, 2)
    return prediction, truth, mask


def test_every_score_on_two_pixels():
    metrics = GapFillMetrics(2, band_names=["red", "nir"], ssim_window=1)
    metrics.update(*_two_pixels())
    scores = metrics.compute()
    # errors: red 0.1 and 0; nir -0.1 and 0.2
    assert scores.band_mae == pytest.approx((0.05, 0.15))
    assert scores.band_rmse == pytest.approx((math.sqrt(0.005), math.sqrt(0.025)))
    assert scores.mae == pytest.approx(0.1)
    assert scores.rmse == pytest.approx(math.sqrt(0.015))
    assert scores.psnr == pytest.approx(-10 * math.log10(0.015))  # 18.24 dB
    # angles: cos = 0.24 / (0.5 * 0.5) for the first pixel, 0.12 / (sqrt(0.08) sqrt(0.2)) for the second
    angles = (math.degrees(math.acos(0.96)), math.degrees(math.acos(3 / math.sqrt(10))))
    assert scores.sam == pytest.approx(sum(angles) / 2)  # 16.26 and 18.43 degrees
    # a 1 px window has no variance: SSIM is the luminance term (2xy + c1) / (x^2 + y^2 + c1)
    c1 = 0.01**2
    terms = [(0.24 + c1) / (0.25 + c1), 1.0, (0.24 + c1) / (0.25 + c1), (0.16 + c1) / (0.2 + c1)]
    assert scores.ssim == pytest.approx(sum(terms) / 4)
    assert (scores.pixels, scores.images) == (2, 1)
    assert scores.to_dict()["bands"]["nir"]["rmse"] == pytest.approx(math.sqrt(0.025))


def test_ssim_is_computed_only_on_whole_held_out_dates():
    prediction, truth, mask = _two_pixels()
    mask = mask.clone()
    mask[0, 0, 0, 1] = False  # the first date is no longer whole
    metrics = GapFillMetrics(2, ssim_window=1)
    metrics.update(prediction, truth, mask)
    scores = metrics.compute()
    assert scores.images == 0 and math.isnan(scores.ssim)
    assert scores.pixels == 1 and scores.band_mae == pytest.approx((0.1, 0.1))


def test_ssim_is_torchmetrics_map_over_the_windows_inside_the_image():
    generator = torch.Generator().manual_seed(2)
    truth = torch.rand(3, 4, 24, 24, generator=generator, dtype=torch.float64)
    prediction = (truth + 0.1 * torch.randn(truth.shape, generator=generator, dtype=torch.float64)).clamp(
        0, 1
    )
    for window, sigma in ((11, 1.5), (5, 0.5)):
        _, full = structural_similarity_index_measure(
            prediction, truth, data_range=1.0, sigma=sigma, return_full_image=True, reduction="none"
        )
        pad = window // 2
        expected = full[..., pad:-pad, pad:-pad].flatten(1).mean(1)
        torch.testing.assert_close(ssim_images(prediction, truth, window, sigma), expected)
    assert float(ssim_images(truth, truth).min()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="window"):
        ssim_images(truth[..., :4, :4], truth[..., :4, :4])


def test_two_batches_score_as_one():
    generator = torch.Generator().manual_seed(3)
    truth = torch.rand(4, 3, 10, 8, 8, generator=generator)
    prediction = truth + 0.05 * torch.randn(truth.shape, generator=generator)
    mask = torch.rand(4, 3, 8, 8, generator=generator) > 0.5
    mask[:, 1] = True  # whole held-out dates
    whole, split = GapFillMetrics(10), GapFillMetrics(10)
    whole.update(prediction, truth, mask)
    split.update(prediction[:1], truth[:1], mask[:1])
    split.update(prediction[1:], truth[1:], mask[1:])
    one, two = whole.compute().to_dict(), split.compute().to_dict()
    for band, values in one.pop("bands").items():
        assert values == pytest.approx(two["bands"][band], rel=1e-12)
    assert one == pytest.approx({k: v for k, v in two.items() if k != "bands"}, rel=1e-12)
    assert whole.compute().images == 4 and whole.band_names == S2_BANDS
    whole.reset()
    assert whole.compute().pixels == 0


def test_bad_batches_are_refused_naming_the_argument():
    metrics = GapFillMetrics(2)
    truth = torch.zeros(1, 2, 2, 5, 5)
    with pytest.raises(ValueError, match="truth"):
        metrics.update(
            torch.zeros(1, 2, 3, 5, 5), torch.zeros(1, 2, 3, 5, 5), torch.ones(1, 2, 5, 5, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="prediction"):
        metrics.update(truth[:, :1], truth, torch.ones(1, 2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        metrics.update(truth, truth, torch.ones(1, 2, 5, 5))
    with pytest.raises(ValueError, match="band names"):
        GapFillMetrics(2, band_names=["a"])


def _scores(rmse: float, bands: tuple[str, ...] = ("B2", "B3")) -> GapFillScores:
    return GapFillScores(bands, (0.01, 0.02), (rmse, 2 * rmse), 0.015, rmse, 30.0, 0.9, 3.5, 10, 1)


def test_scores_table_has_one_row_per_method_and_a_column_per_band():
    table = scores_table({"model": _scores(0.01), "linear interpolation": _scores(0.03)})
    lines = table.strip().splitlines()
    assert lines[0] == "| method | MAE | RMSE | PSNR (dB) | SSIM | SAM (°) | RMSE B2 | RMSE B3 |"
    assert lines[2] == "| model | 0.0150 | 0.0100 | 30.00 | 0.9000 | 3.50 | 0.0100 | 0.0200 |"
    assert lines[3].startswith("| linear interpolation | 0.0150 | 0.0300 |") and len(lines) == 4
    with pytest.raises(ValueError, match="bands"):
        scores_table({"a": _scores(0.01), "b": _scores(0.01, ("B2", "B4"))})
    with pytest.raises(ValueError, match="empty"):
        scores_table({})
