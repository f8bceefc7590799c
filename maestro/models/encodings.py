"""Fixed (not learned) token encodings: 2-D position on a common fine grid plus the date.

Modalities have different token grids (aerial 32x32, dem 16x16, Sentinel 5x5 on FLAIR-HUB). The
position code is computed once on a fine grid that every token grid divides (160x160) and
block-averaged down to each token grid, so a coarse token gets exactly the mean code of the fine
cells it covers, and co-located tokens of different resolutions share one position. The last
:data:`~maestro.models.config.DATE_CHANNELS` channels carry the acquisition date instead.

Two options reproduce the date code of the reference implementation exactly, for models converted
from it (:mod:`maestro.reference`): ``day_of_year_origin=1`` (it numbers 1 January as day 1,
the suite's ``times`` as day 0) and ``date_offset="float32"`` (it forms the year offset from
absolute fractional years in float32, which rounds it by up to about 1e-4 year).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from maestro.models.config import DATE_CHANNELS

DateOffset = Literal["exact", "float32"]
DATE_OFFSETS: tuple[str, ...] = ("exact", "float32")
DAYS_PER_YEAR = 365.25
PIVOT_YEAR = 2000.0
"""Stand-in absolute year of the float32 emulation: any year in [1024, 2048) rounds alike."""


def sincos_position_code(
    dim: int, grid_size: int, temperature: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """2-D sin-cos code of shape ``(grid_size, grid_size, dim)``, channels [sin x, cos x, sin y, cos y].

    Frequencies follow the reference implementation: ``temperature ** -(i / (n - 1))`` for
    ``i = 0..n-1`` with ``n = dim / 4``.
    """
    if dim % 4:
        raise ValueError(f"position code dimension {dim} must be a multiple of 4")
    quarter = dim // 4
    exponent = torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1)
    omega = temperature**-exponent
    coords = torch.arange(grid_size, dtype=torch.float64)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    x = x[..., None] * omega
    y = y[..., None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1).to(dtype)


def block_average(code: Tensor, token_grid: int) -> Tensor:
    """Average a ``(G, G, C)`` fine-grid code over blocks, giving ``(token_grid, token_grid, C)``."""
    fine = code.shape[0]
    if fine % token_grid:
        raise ValueError(f"token grid {token_grid} does not divide the position grid {fine}")
    pooled = F.avg_pool2d(rearrange(code, "h w c -> 1 c h w"), kernel_size=fine // token_grid)
    return rearrange(pooled, "1 c h w -> h w c")


def float32_year_offset(offset: Tensor, doy: Tensor, origin: int = 0) -> Tensor:
    """The year offset as float32 arithmetic on absolute fractional years rounds it.

    ``offset`` (years since the reference date) and ``doy`` (day of year counted from 0) come from
    whole-day dates, so the whole-year difference ``dy`` and the reference's day of year are
    recovered exactly: ``offset * 365.25 - doy = 365.25 * dy - doy_ref`` with ``0 <= doy_ref <= 365``.
    Then ``(year + day / 365.25) - (year_ref + day_ref / 365.25)`` is evaluated in float32, with
    days numbered from ``origin``. Between the years 1024 and 2047 a float32 has the same spacing
    (2**-13), so the result does not depend on the absolute year and :data:`PIVOT_YEAR` stands in
    for it.
    """
    scaled = offset.double() * DAYS_PER_YEAR - doy.double()
    whole_years = torch.round((scaled + 182.5) / DAYS_PER_YEAR)
    reference_doy = torch.round(whole_years * DAYS_PER_YEAR - scaled)
    mine = (PIVOT_YEAR + whole_years).float() + (doy.float() + origin) / DAYS_PER_YEAR
    reference = torch.full_like(mine, PIVOT_YEAR) + (reference_doy.float() + origin) / DAYS_PER_YEAR
    return mine - reference


def date_code(times: Tensor, date_offset: DateOffset = "exact", day_of_year_origin: int = 0) -> Tensor:
    """``(..., 3)`` [years since reference, day of year, hour] -> ``(..., 8)`` date code.

    4 copies of the year offset (so it weighs like the periodic terms together), then
    sin/cos of the day of year and sin/cos of the hour of day. ``day_of_year_origin`` is added to
    the day of year first; ``date_offset="float32"`` re-rounds the offset with
    :func:`float32_year_offset` (both for models converted from the reference implementation).
    """
    years, doy, hour = times.float().unbind(-1)
    if date_offset == "float32":
        years = float32_year_offset(years, doy, day_of_year_origin)
    elif date_offset != "exact":
        raise ValueError(
            f"unknown date offset arithmetic {date_offset!r}; expected one of {list(DATE_OFFSETS)}"
        )
    if day_of_year_origin:
        doy = doy + day_of_year_origin
    day_angle = 2 * math.pi * doy / 365.25
    hour_angle = 2 * math.pi * hour / 24.0
    periodic = torch.stack([day_angle.sin(), day_angle.cos(), hour_angle.sin(), hour_angle.cos()], dim=-1)
    offsets = years[..., None].expand(*years.shape, DATE_CHANNELS - 4)
    return torch.cat([offsets, periodic], dim=-1)


class TokenEncoding(nn.Module):
    """Adds position and date codes to token tensors of one width.

    Position codes for every token grid in use are cached as (non-persistent) buffers, so they
    follow the module across devices and never enter checkpoints.
    """

    def __init__(
        self,
        width: int,
        grid_size: int,
        token_grids: list[int],
        date_offset: DateOffset = "exact",
        day_of_year_origin: int = 0,
    ):
        super().__init__()
        self.width = width
        self.date_offset = date_offset
        self.day_of_year_origin = day_of_year_origin
        self.position_channels = width - DATE_CHANNELS
        fine = sincos_position_code(self.position_channels, grid_size, dtype=torch.float64)
        for grid in sorted(set(token_grids)):
            code = rearrange(block_average(fine, grid), "h w c -> (h w) c").float()
            self.register_buffer(self._buffer_name(grid), code, persistent=False)

    @staticmethod
    def _buffer_name(grid: int) -> str:
        return f"position_grid{grid}"

    def position(self, grid: int) -> Tensor:
        """``(grid * grid, width - 8)`` position code of a token grid, row-major."""
        return getattr(self, self._buffer_name(grid))

    def forward(self, tokens: Tensor, times: Tensor, grid: int) -> Tensor:
        """``tokens (B, T, G, N, width)`` + codes; ``times (B, T, 3)``; ``N = grid * grid``."""
        position = self.position(grid).to(tokens.dtype)
        dates = date_code(times, self.date_offset, self.day_of_year_origin).to(tokens.dtype)[
            :, :, None, None, :
        ]
        split = self.position_channels
        return torch.cat([tokens[..., :split] + position, tokens[..., split:] + dates], dim=-1)
