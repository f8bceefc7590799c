"""maestro.models.gapfill: what cloud removal restores, from what, and what it leaves alone."""

import pytest
import torch
from gapfill_fixtures import tiny_encoder

from maestro.errors import ConfigError
from maestro.evaluation.gapfill import linear_interpolation
from maestro.models.config import MAEConfig
from maestro.models.gapfill import (
    MaestroGapFill,
    day_numbers,
    fill_series,
    hold_out,
    restoration_plan,
    restore_series,
    to_reflectance,
)
from maestro.models.gapfill_config import GapFillConfig

ENCODER = tiny_encoder(s2_dates=6, s1_dates=3)
MAE = MAEConfig(encoder=ENCODER, decoder_width=16, decoder_heads=2, decoder_depth=1)


def _batch(seed: int = 0, batch: int = 2) -> tuple[dict, dict, dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "s2": torch.rand(batch, 6, 10, 10, 10, generator=generator),
        "s1_asc": torch.rand(batch, 3, 2, 10, 10, generator=generator),
    }
    days = torch.tensor([10.0, 40.0, 70.0, 100.0, 130.0, 160.0])
    times = {
        "s2": torch.stack([torch.zeros(6), days, torch.zeros(6)], -1).expand(batch, 6, 3).clone(),
        "s1_asc": torch.stack([torch.zeros(3), days[::2] + 5, torch.zeros(3)], -1)
        .expand(batch, 3, 3)
        .clone(),
    }
    valid = {"s2": torch.ones(batch, 6, dtype=torch.bool), "s1_asc": torch.ones(batch, 3, dtype=torch.bool)}
    valid["s2"][1, 5] = False  # a padded date
    flags = torch.zeros(batch, 6, 10, 10, dtype=torch.bool)
    flags[0, 2, :4, :4] = True  # a partly cloudy date
    flags[1, 1] = True  # an overcast one
    return inputs, times, valid, flags


@pytest.fixture(scope="module")
def model() -> MaestroGapFill:
    torch.manual_seed(0)
    return MaestroGapFill(GapFillConfig(MAE)).eval()


def test_only_cloudy_pixels_change_and_an_untrained_model_is_the_interpolation(model: MaestroGapFill):
    inputs, times, valid, flags = _batch()
    with torch.no_grad():
        filled = fill_series(model, inputs, times, valid, flags)
    replaced = filled.replaced.unsqueeze(2).expand_as(inputs["s2"])
    assert torch.equal(filled.series[~replaced], inputs["s2"][~replaced])  # bit-identical
    assert filled.replaced.sum() == 16 + 100 and torch.equal(
        filled.replaced, flags & valid["s2"][..., None, None]
    )
    _, trusted = restoration_plan(valid["s2"], flags)
    prior = linear_interpolation(inputs["s2"], day_numbers(times["s2"]), trusted)
    assert torch.allclose(filled.series[replaced], prior[replaced])  # zero correction at start


def test_hidden_pixels_are_never_seen(model: MaestroGapFill):
    """What a hidden pixel held does not change the model's output anywhere (its token is padding)."""
    inputs, times, valid, flags = _batch()
    held = torch.zeros(2, 6, 10, 10, dtype=torch.bool)
    held[0, 4] = True  # a whole held-out date
    held[1, 3, 2:6, 4:8] = True  # a held-out rectangle, on token borders (patch 5)
    for linear in model.correction.groups:  # a non-zero head, so the network's output matters
        torch.nn.init.normal_(linear.weight, std=0.1)
    try:
        with torch.no_grad():
            first = fill_series(model, inputs, times, valid, flags, held)
            changed = {**inputs, "s2": inputs["s2"].clone()}
            changed["s2"][0, 4] = 123.0
            changed["s2"][1, 3, :, 0:10, 0:10] = torch.where(
                (held[1, 3] | flags[1, 3]).unsqueeze(0), torch.tensor(-5.0), changed["s2"][1, 3]
            )
            changed["s2"][1, 1] = -5.0  # the overcast date
            changed["s2"][0, 2, :, :4, :4] = 9.0  # the cloudy pixels
            second = fill_series(model, changed, times, valid, flags, held)
            third = fill_series(model, {**changed, "s2": changed["s2"] + 0.5}, times, valid, flags, held)
    finally:
        for linear in model.correction.groups:
            torch.nn.init.zeros_(linear.weight)
    restored = first.replaced.unsqueeze(2).expand_as(first.prediction)
    assert torch.allclose(first.prediction[restored], second.prediction[restored], atol=1e-5)
    assert not torch.allclose(first.prediction[restored], third.prediction[restored])  # seen pixels count


def _long_series(dates: int = 15) -> tuple[dict, dict, dict, torch.Tensor]:
    """Two samples of ``dates`` S2 dates (the model reads 6 at a time): cloudy pixels in the first
    run and the last one, none in between; a padded date flagged too."""
    inputs, times, valid, _ = _batch()
    generator = torch.Generator().manual_seed(1)
    days = torch.arange(dates, dtype=torch.float32) * 12 + 3
    inputs = {**inputs, "s2": torch.rand(2, dates, 10, 10, 10, generator=generator)}
    times = {
        **times,
        "s2": torch.stack([torch.zeros(dates), days, torch.zeros(dates)], -1).expand(2, dates, 3),
    }
    valid = {**valid, "s2": torch.ones(2, dates, dtype=torch.bool)}
    valid["s2"][1, -1] = False
    flags = torch.zeros(2, dates, 10, 10, dtype=torch.bool)
    flags[0, 1, :4, :4] = True
    flags[1, dates - 2] = True
    flags[1, -1] = True  # padding: never restored
    return inputs, times, valid, flags


def test_a_whole_series_is_restored_run_by_run_from_its_whole_prior(model: MaestroGapFill):
    inputs, times, valid, flags = _long_series()
    restored, replaced = restore_series(model, inputs, times, valid, flags)
    assert torch.equal(replaced, flags & valid["s2"][..., None, None])
    _, trusted = restoration_plan(valid["s2"], flags)
    prior = linear_interpolation(inputs["s2"], day_numbers(times["s2"]), trusted)
    assert torch.equal(restored, prior)  # an untrained head corrects nothing, on every run
    for linear in model.correction.groups:
        torch.nn.init.normal_(linear.weight, std=0.1)
    try:
        restored, replaced = restore_series(model, inputs, times, valid, flags)
        first = slice(0, 6)  # the first run, whose cloudy pixels' clear neighbours lie inside it
        alone = fill_series(
            model, {**inputs, "s2": inputs["s2"][:, first]}, {**times, "s2": times["s2"][:, first]},
            {**valid, "s2": valid["s2"][:, first]}, flags[:, first],
        )  # fmt: skip
    finally:
        for linear in model.correction.groups:
            torch.nn.init.zeros_(linear.weight)
    pixels = replaced[:, first].unsqueeze(2).expand_as(alone.series)
    assert torch.allclose(restored[:, first][pixels], alone.series[pixels], atol=1e-6)
    assert not torch.allclose(restored[:, first][pixels], prior[:, first][pixels])
    assert torch.equal(restored[:, 6:12], inputs["s2"][:, 6:12])  # a run with nothing to restore is skipped
    last = replaced[:, 12:].unsqueeze(2).expand_as(restored[:, 12:])
    assert not torch.allclose(restored[:, 12:][last], prior[:, 12:][last])  # the short last run, padded


def test_held_out_pixels_are_clear_and_leave_one_clear_date_whole():
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[2, 3:] = False
    flags = torch.zeros(3, 6, 4, 4, dtype=torch.bool)
    flags[0, :3, 0, 0] = True  # three cloudy dates: three clear ones left
    flags[1, :5, 1, 1] = True  # one clear date: nothing can be held out
    shapes = set()
    for seed in range(40):
        held = hold_out(valid, flags, 0.5, torch.Generator().manual_seed(seed))
        dates = held.flatten(2).any(-1)
        assert not (dates & flags.flatten(2).any(-1)).any() and not (dates & ~valid).any()
        assert dates.sum(1).tolist() == [1, 0, 1]  # floor(0.5 x clear), at least 1, one clear kept
        for b, t in dates.nonzero().tolist():
            rows, cols = held[b, t].any(1), held[b, t].any(0)
            assert rows.sum() >= 2 and cols.sum() >= 2  # half a side at least
            assert held[b, t].sum() == rows.sum() * cols.sum()  # a rectangle
            shapes.add(bool(held[b, t].all()))
    assert shapes == {True, False}  # whole dates and rectangles


def test_the_target_must_be_a_masked_series_of_the_mae_and_reflectance_scale():
    with pytest.raises(ConfigError, match="target: 's1_asc' must be an input time series with a cloud mask"):
        GapFillConfig(MAE, target="s1_asc")
    with pytest.raises(ConfigError, match="cloud_threshold"):
        GapFillConfig(MAE, cloud_threshold=100.0)
    assert to_reflectance("s2") == 0.5  # DN / 5000 -> DN / 10000
