"""maestro.models.gapfill: what cloud removal restores, from what, and what it leaves alone."""

import pytest
import torch

from maestro.errors import ConfigError
from maestro.evaluation.gapfill import linear_interpolation
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.gapfill import (
    MaestroGapFill,
    day_numbers,
    fill_series,
    hold_out,
    restoration_plan,
    to_reflectance,
)
from maestro.models.gapfill_config import GapFillConfig

ENCODER = EncoderConfig(
    modalities=("s2", "s1_asc"),
    overrides={"s2": {"num_dates": 6, "patch_size": 5}, "s1_asc": {"num_dates": 3, "patch_size": 5}},
    size="tiny",
    width=32,
    depth=2,
    inter_depth=1,
    grid_size=4,
)
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
