"""U-TAE / L-TAE of the Swin-UTAE baseline: padding masks, real date positions, monthly averages."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import TINY_UTAE

from maestro.models.baseline.inputs import day_offsets, month_of, monthly_average
from maestro.models.baseline.ltae import LTAE, DateEncoding, MaskedGroupNorm
from maestro.models.baseline.utae import UTAE

pytestmark = pytest.mark.usefixtures("single_thread")


def series(batch: int = 2, dates: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dates, 3, 4, 4, generator=generator)
    days = torch.sort(torch.randint(-130, 230, (batch, dates), generator=generator).float(), dim=1).values
    valid = torch.ones(batch, dates, dtype=torch.bool)
    valid[0, 3:] = False  # sample 0: two padded dates at the end
    return x, days, valid


@pytest.mark.parametrize("training", [False, True])
def test_padded_dates_change_nothing(training: bool) -> None:
    torch.manual_seed(0)
    model = UTAE(TINY_UTAE, in_channels=3, num_classes=5).train(training)
    x, days, valid = series()
    other = x.clone()
    other[0, 3:] = torch.randn_like(other[0, 3:]) * 1e3
    other[0, 4, 0, 0, 0] = float("nan")
    other_days = days.clone()
    other_days[0, 3:] = 999.0
    torch.manual_seed(1)
    first = model(x, days, valid)
    torch.manual_seed(1)
    second = model(other, other_days, valid)
    for a, b in zip([*first.maps, first.logits], [*second.maps, second.logits], strict=True):
        assert torch.equal(a, b)


def test_attention_gives_padded_dates_no_weight_and_empty_series_no_nan() -> None:
    torch.manual_seed(0)
    ltae = LTAE(16, 16, d_model=16, num_heads=4, d_k=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 16, 3, 3)
    valid = torch.tensor([[True, True, False, True, False], [False] * 5])
    out, attention = ltae(x, torch.arange(5.0).expand(2, 5) * 10, valid)
    assert attention.shape == (4, 2, 5, 3, 3)
    assert (attention[:, 0, [2, 4]] == 0).all()
    torch.testing.assert_close(attention[:, 0].sum(dim=1), torch.ones(4, 3, 3))
    assert (attention[:, 1] == 0).all() and torch.isfinite(out).all()


def test_positions_are_the_dates_not_the_ranks() -> None:
    torch.manual_seed(0)
    model = UTAE(TINY_UTAE, in_channels=3, num_classes=5).eval()
    x, days, valid = series()
    valid[:] = True
    reference = model(x, days, valid).logits
    order = torch.tensor([4, 2, 0, 1, 3])  # same (frame, date) pairs, another order in the tensor
    torch.testing.assert_close(
        model(x[:, order], days[:, order], valid).logits, reference, rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(model(x, days + 40.0, valid).logits, reference, atol=1e-4)


def test_masked_group_norm_ignores_padded_dates() -> None:
    norm = MaskedGroupNorm(2, 4)
    x = torch.randn(3, 6, 4)
    valid = torch.tensor([[True] * 4 + [False] * 2] * 3)
    noisy = x.clone()
    noisy[:, 4:] = 1e4
    torch.testing.assert_close(norm(x, valid)[:, :4], norm(noisy, valid)[:, :4])
    plain = torch.nn.functional.group_norm(x[:, :4].transpose(1, 2), 2).transpose(1, 2)
    torch.testing.assert_close(norm(x, valid)[:, :4], plain, rtol=1e-4, atol=1e-5)


def test_date_code_is_sinusoidal_with_period_1000() -> None:
    code = DateEncoding(4, num_heads=2, period=1000.0)(torch.tensor([[0.0, 500.0]]))
    assert code.shape == (1, 2, 8)
    torch.testing.assert_close(code[0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0] * 2))
    day = torch.tensor(500.0)
    torch.testing.assert_close(code[0, 1, :2], torch.stack([day.sin(), day.cos()]))
    torch.testing.assert_close(code[0, 1, 2], (day / 1000**0.5).sin())
    torch.testing.assert_close(code[0, 1, 4:], code[0, 1, :4])  # one copy per head


def test_day_offsets_count_from_may_15() -> None:
    times = torch.tensor([[[0.0, 134.0, 0.0], [0.3, 0.0, 0.0], [0.1, 364.0, 0.0]]])
    torch.testing.assert_close(day_offsets(times, 134), torch.tensor([[0.0, -134.0, 230.0]]))


def test_monthly_average_pools_the_valid_dates_of_each_month() -> None:
    doy = torch.tensor([[10.0, 20.0, 40.0, 45.0, 200.0]])
    assert month_of(doy).tolist() == [[0, 0, 1, 1, 6]]
    x = torch.arange(5.0).reshape(1, 5, 1, 1, 1).expand(1, 5, 2, 2, 2).clone()
    times = torch.zeros(1, 5, 3)
    times[..., 1] = doy
    valid = torch.tensor([[True, True, True, False, True]])
    monthly, monthly_times, monthly_valid = monthly_average(x, times, valid)
    assert monthly.shape == (1, 12, 2, 2, 2)
    assert monthly_valid[0].nonzero().flatten().tolist() == [0, 1, 6]
    assert monthly[0, :, 0, 0, 0][[0, 1, 6]].tolist() == [0.5, 2.0, 4.0]
    assert monthly_times[0, [0, 1, 6], 1].tolist() == [15.0, 40.0, 200.0]
    assert (monthly[0, 2] == 0).all()
