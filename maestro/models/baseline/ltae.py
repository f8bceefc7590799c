"""L-TAE: lightweight temporal attention with one learned query per head, over real dates and a padding mask.

Garnot & Landrieu, "Lightweight Temporal Self-Attention for Classifying Satellite Image Time
Series" (2020), as used inside U-TAE (ICCV 2021). Each pixel's sequence of date features is
normalised, projected to ``d_model``, given a sinusoidal code of its *day offset* (not its rank in
the sequence, so irregular revisits and missing dates keep their real spacing), and attended by
one learned query per head. Padded dates, marked by the ``valid`` mask the collate produces, take
no part anywhere: not in the input normalisation statistics and not in the attention (their
weight is exactly 0); a pixel without any valid date gets zero weights and a zero output.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import Tensor, nn


class DateEncoding(nn.Module):
    """Day offsets ``(..., T)`` -> sin/cos code ``(..., T, heads * dim)``, one copy per head.

    Channel pairs ``2i, 2i+1`` hold sin and cos of ``day / period^(2i / dim)``.
    """

    def __init__(self, dim: int, num_heads: int, period: float = 1000.0):
        super().__init__()
        self.num_heads = num_heads
        exponents = 2 * (torch.arange(dim) // 2) / dim
        self.register_buffer("frequencies", period**-exponents, persistent=False)

    def forward(self, days: Tensor) -> Tensor:
        angles = days.float()[..., None] * self.frequencies
        code = torch.where(
            torch.arange(angles.shape[-1], device=days.device) % 2 == 0, angles.sin(), angles.cos()
        )
        return repeat(code, "... d -> ... (h d)", h=self.num_heads)


class MaskedGroupNorm(nn.Module):
    """GroupNorm of ``(N, T, C)`` sequences over channel groups and the *valid* dates only.

    A plain GroupNorm over (C, T) would let padded dates shift the statistics of the real ones.
    """

    def __init__(self, num_groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        groups = rearrange(x.float(), "n t (g c) -> n g t c", g=self.num_groups)
        weights = rearrange(valid.float(), "n t -> n 1 t 1")
        count = (weights.sum(dim=(2, 3)) * groups.shape[-1]).clamp_min(1.0)[..., None, None]
        mean = (groups * weights).sum(dim=(2, 3), keepdim=True) / count
        variance = ((groups - mean).square() * weights).sum(dim=(2, 3), keepdim=True) / count
        normed = rearrange((groups - mean) * torch.rsqrt(variance + self.eps), "n g t c -> n t (g c)")
        return (normed * self.weight + self.bias).to(x.dtype)


def masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the last axis restricted to ``valid``; rows without a valid entry give zeros."""
    any_valid = valid.any(dim=-1, keepdim=True)
    masked = scores.float().masked_fill(~(valid | ~any_valid), float("-inf"))
    return torch.where(any_valid, masked.softmax(dim=-1), 0.0).to(scores.dtype)


class LTAE(nn.Module):
    """``(B, T, C, H, W)`` features, day offsets ``(B, T)``, valid ``(B, T)`` ->
    ``(B, out_channels, H, W)`` and the attention weights ``(heads, B, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        d_model: int = 256,
        num_heads: int = 16,
        d_k: int = 4,
        period: float = 1000.0,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.num_heads, self.d_k = num_heads, d_k
        self.in_norm = MaskedGroupNorm(num_heads, in_channels)
        self.in_proj = nn.Linear(in_channels, d_model)
        self.dates = DateEncoding(d_model // num_heads, num_heads, period)
        self.query = nn.Parameter(torch.empty(num_heads, d_k))
        nn.init.normal_(self.query, std=math.sqrt(2.0 / d_k))
        self.to_keys = nn.Linear(d_model, num_heads * d_k)
        self.attention_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU())
        self.out_dropout = nn.Dropout(dropout)
        self.out_norm = nn.GroupNorm(num_heads, out_channels)

    def forward(self, x: Tensor, days: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        batch, _, _, height, width = x.shape
        sequences = rearrange(x, "b t c h w -> (b h w) t c")
        mask = repeat(valid.bool(), "b t -> (b h w) t", h=height, w=width)
        codes = repeat(self.dates(days), "b t d -> (b h w) t d", h=height, w=width)
        values = self.in_proj(self.in_norm(sequences, mask)) + codes.to(sequences.dtype)
        keys = rearrange(self.to_keys(values), "n t (h k) -> n h t k", h=self.num_heads)
        scores = torch.einsum("nhtk,hk->nht", keys, self.query.to(keys.dtype)) / math.sqrt(self.d_k)
        attention = masked_softmax(scores, rearrange(mask, "n t -> n 1 t"))
        heads = rearrange(values, "n t (h d) -> n h t d", h=self.num_heads)
        pooled = torch.einsum("nht,nhtd->nhd", self.attention_dropout(attention), heads)
        out = self.out_norm(self.out_dropout(self.mlp(rearrange(pooled, "n h d -> n (h d)"))))
        out = rearrange(out, "(b h w) c -> b c h w", b=batch, h=height)
        attention = rearrange(attention, "(b y x) h t -> h b t y x", b=batch, y=height)
        return out, attention
