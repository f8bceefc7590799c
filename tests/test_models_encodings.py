import math

import torch
import torch.nn.functional as F
from einops import rearrange

from maestro.models.config import EncoderConfig
from maestro.models.encodings import TokenEncoding, block_average, date_code, sincos_position_code


def test_sincos_layout_and_frequencies():
    code = sincos_position_code(16, 10)
    assert code.shape == (10, 10, 16)
    y, x = 3, 7
    omega = 10000.0 ** -(torch.arange(4, dtype=torch.float64) / 3)
    expected = torch.cat([(x * omega).sin(), (x * omega).cos(), (y * omega).sin(), (y * omega).cos()]).float()
    torch.testing.assert_close(code[y, x], expected)


def test_colocated_tokens_of_different_resolutions_share_position():
    config = EncoderConfig()
    grids = {key: spec.grid for key, spec in config.specs.items()}  # aerial 32, dem 16, s2/s1 5
    encoding = TokenEncoding(64, config.grid_size, list(grids.values()))
    aerial = rearrange(encoding.position(grids["aerial"]), "(h w) c -> 1 c h w", h=32)
    dem = rearrange(encoding.position(grids["dem"]), "(h w) c -> 1 c h w", h=16)
    # a dem token covers 2x2 aerial tokens: its code is exactly their mean
    torch.testing.assert_close(F.avg_pool2d(aerial.double(), 2).float(), dem, atol=1e-6, rtol=0)
    # every token's code is the mean of the fine-grid cells it covers
    fine = sincos_position_code(64 - 8, 160, dtype=torch.float64)
    s2 = rearrange(encoding.position(grids["s2"]), "(h w) c -> h w c", h=5)
    torch.testing.assert_close(s2[1, 3], fine[32:64, 96:128].mean(dim=(0, 1)).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(s2, block_average(fine, 5).float())


def test_date_code():
    times = torch.tensor([[1.5, 365.25 / 4, 6.0]])
    code = date_code(times)
    assert code.shape == (1, 8)
    expected = torch.tensor([1.5, 1.5, 1.5, 1.5, 1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(code[0], expected, atol=1e-6, rtol=0)
    doy = torch.tensor([[0.0, 200.0, 0.0]])
    assert math.isclose(date_code(doy)[0, 4].item(), math.sin(2 * math.pi * 200 / 365.25), abs_tol=1e-6)


def test_encoding_adds_position_then_date_channels():
    encoding = TokenEncoding(24, 160, [4])
    times = torch.tensor([[[0.5, 10.0, 12.0], [-1.0, 100.0, 0.0]]])  # (B=1, T=2, 3)
    tokens = torch.zeros(1, 2, 1, 16, 24)
    out = encoding(tokens, times, 4)
    torch.testing.assert_close(out[0, 1, 0, :, :16], encoding.position(4))
    torch.testing.assert_close(out[0, 1, 0, 5, 16:], date_code(times[0, 1]))
    assert (out[0, 0, 0, :, 16:20] == 0.5).all()


def test_position_codes_are_cached_buffers_outside_checkpoints():
    encoding = TokenEncoding(24, 160, [4, 32, 4])
    assert {name for name, _ in encoding.named_buffers()} == {"position_grid4", "position_grid32"}
    assert encoding.state_dict() == {}
