import pytest
import torch

from maestro.models.config import EncoderConfig
from maestro.models.heads.options import reference_grid
from maestro.models.heads.pooling import AttentivePool, DatePool, MeanPool, make_pool, resample, token_sets
from maestro.models.synthetic import tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

POOLINGS = ["mean", "attentive"]


def _tokens(batch: int = 2, dates: int = 3, groups: int = 2, grid: int = 2, width: int = 16) -> torch.Tensor:
    return torch.randn(batch, dates, groups, grid, grid, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", POOLINGS)
def test_padded_dates_change_nothing(kind):
    """Whatever the encoder leaves on padded dates (even NaN) cannot reach the pooled map."""
    torch.manual_seed(0)
    pool = DatePool(16, kind).eval()
    tokens = _tokens()
    valid = torch.tensor([[True, False, True], [True, True, False]])
    expected = pool(tokens, valid)
    changed = tokens.clone()
    changed[0, 1] = 1e4
    changed[1, 2] = float("nan")
    torch.testing.assert_close(pool(changed, valid), expected)
    assert torch.isfinite(expected).all()


@pytest.mark.parametrize("kind", POOLINGS)
def test_a_sample_without_valid_dates_pools_to_zeros_without_nan(kind):
    torch.manual_seed(0)
    pool = DatePool(16, kind)
    tokens = _tokens().requires_grad_()
    valid = torch.tensor([[True, False, True], [False, False, False]])
    pooled = pool(tokens, valid)
    assert torch.equal(pooled[1], torch.zeros_like(pooled[1]))
    assert pooled[0].abs().sum() > 0
    pooled.sum().backward()
    assert torch.isfinite(tokens.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


def test_mean_pool_averages_the_valid_dates_and_band_groups():
    tokens = _tokens()
    valid = torch.tensor([[True, False, True], [True, True, True]])
    pooled = DatePool(16, "mean")(tokens, valid)
    expected = tokens[0, [0, 2]].mean(dim=(0, 1))  # (h, w, D)
    torch.testing.assert_close(pooled[0], expected.permute(2, 0, 1))
    torch.testing.assert_close(pooled[1], tokens[1].mean(dim=(0, 1)).permute(2, 0, 1))


def test_attentive_pool_is_a_convex_combination_of_values_with_a_learned_query():
    torch.manual_seed(0)
    pool = AttentivePool(16, num_heads=8)
    assert pool.query.shape == (16,)
    sets, key_valid = torch.randn(5, 4, 16), torch.ones(5, 4, dtype=torch.bool)
    out = pool(sets, key_valid)
    assert out.shape == (5, 16)
    # one set of identical tokens pools to the normed value of that token, whatever the query
    same = sets[:, :1].expand(-1, 4, -1)
    value = pool.to_kv(pool.norm(sets[:, 0]))[:, 16:]
    torch.testing.assert_close(pool(same, key_valid), pool.norm_out(value))
    with pytest.raises(ValueError, match="not divisible by 8"):
        AttentivePool(12)


def test_date_pool_resamples_to_the_reference_grid():
    tokens = torch.ones(2, 1, 1, 2, 2, 8)
    maps = DatePool(8, "mean", size=4)(tokens, torch.ones(2, 1, dtype=torch.bool))
    assert maps.shape == (2, 8, 4, 4)
    torch.testing.assert_close(maps, torch.ones_like(maps))  # bilinear keeps a constant map


def test_token_sets_resize_frames_one_by_one():
    tokens = torch.zeros(1, 2, 1, 2, 2, 4)
    tokens[:, 1] = 1.0  # date 1 constant 1, date 0 constant 0: resizing must not mix them
    sets, key_valid = token_sets(tokens, torch.tensor([[True, False]]), size=4)
    assert sets.shape == (16, 2, 4) and key_valid.shape == (16, 2)
    assert torch.equal(sets[:, 1], torch.zeros(16, 4))  # invalid date zeroed
    assert key_valid[:, 0].all() and not key_valid[:, 1].any()


def test_reference_grid_is_the_finest_token_grid():
    assert reference_grid(tiny_config().encoder.specs) == 4
    assert reference_grid(EncoderConfig().specs) == 32


def test_make_pool_names_the_valid_kinds():
    assert isinstance(make_pool("mean", 8), MeanPool)
    with pytest.raises(ValueError, match="attentive"):
        make_pool("max", 8)  # type: ignore[arg-type]


@pytest.mark.parametrize(("height", "width", "size"), [(8, 8, 32), (32, 24, 128), (32, 32, 17), (6, 6, 32)])
def test_resample_is_bilinear_interpolation_forward_and_backward(height, width, size):
    """The matrix-product resize is torch's bilinear resize (up, down, non-square), gradients too."""
    maps = torch.randn(2, 3, height, width, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, size, size, dtype=torch.float64)
    ours = resample(maps, size)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), maps)
    torchs = torch.nn.functional.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    (grad_torch,) = torch.autograd.grad((torchs * weights).sum(), maps)
    torch.testing.assert_close(ours, torchs, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_torch, rtol=0, atol=1e-5)


def test_resample_to_the_same_size_is_the_input():
    maps = torch.randn(1, 2, 8, 8)
    assert resample(maps, 8) is maps
