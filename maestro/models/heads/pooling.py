"""Pooling of token sets: the (date x band group) tokens of one location become one feature vector.

Encoder token maps are ``(B, T, G, h, w, D)`` with ``(B, T)`` valid dates. Heads need one map
``(B, D, h, w)``: every location pools the set of its ``T * G`` tokens (or, in the MAESTRO head, the
tokens of all modalities stacked). Padded or dropped dates are excluded from every set, and a set
with no valid token pools to zeros, never NaN, so a missing modality simply contributes nothing.

Two pools share one interface ``(sets (N, L, D), key_valid (N, L)) -> (N, D)``: the masked mean,
and attentive pooling with one learned query (the reference MAESTRO head's ``AttentiveReduce``
with a key mask added).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from maestro.models.heads.options import DATE_POOLINGS, POOL_HEADS, DatePooling


def bilinear_weights(source: int, target: int, like: Tensor) -> Tensor:
    """``(target, source)`` weights of 1-D linear resizing with ``align_corners=False``: the
    identity resized by ``F.interpolate`` itself, so the convention is torch's by construction."""
    exact = torch.float32 if like.device.type == "mps" else torch.float64  # MPS has no float64
    identity = torch.eye(source, device=like.device, dtype=exact)
    weights = F.interpolate(identity[None], size=target, mode="linear", align_corners=False)[0]
    return weights.T.to(like.dtype)


def resample(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    """Bilinear resize of ``(N, C, h, w)`` maps to ``size`` (an int: square; a no-op at that size).

    Computed as ``rows @ maps @ cols.T``, which equals ``F.interpolate(mode="bilinear",
    align_corners=False)``: bilinear resizing is separable. Matrix products because their backward
    is two more matrix products, where the interpolation's is a scatter-add; on an H200 that
    scatter-add of the 512 px logits cost 9 % of the compiled fine-tuning step (BENCHMARKS.md).
    """
    target_height, target_width = (size, size) if isinstance(size, int) else size
    height, width = maps.shape[-2:]
    if (height, width) == (target_height, target_width):
        return maps
    rows = bilinear_weights(height, target_height, maps)
    cols = bilinear_weights(width, target_width, maps)
    return torch.einsum("oh,nchw,pw->ncop", rows, maps, cols)


def token_sets(tokens: Tensor, valid: Tensor, size: int | None = None) -> tuple[Tensor, Tensor]:
    """``(B, T, G, h, w, D)`` tokens and ``(B, T)`` valid dates -> per-location sets.

    Returns ``sets (B*h*w, T*G, D)`` with invalid tokens zeroed (whatever the encoder left there
    cannot leak) and ``key_valid (B*h*w, T*G)``. With ``size``, every (date, band group) frame is
    first resized bilinearly to ``size x size``, as the MAESTRO head does before stacking
    modalities; frames are resized one by one, so dates never mix.
    """
    batch, dates, groups, height, _, _ = tokens.shape
    if size is not None and height != size:
        frames = rearrange(tokens, "b t g h w d -> (b t g) d h w")
        tokens = rearrange(resample(frames, size), "(b t g) d h w -> b t g h w d", b=batch, t=dates)
        height = size
    width = tokens.shape[4]
    key_valid = repeat(valid.bool(), "b t -> (b h w) (t g)", g=groups, h=height, w=width)
    sets = rearrange(tokens, "b t g h w d -> (b h w) (t g) d")
    return torch.where(key_valid[..., None], sets, 0.0), key_valid


class MeanPool(nn.Module):
    """Average of the valid tokens of each set; a set without any gives zeros."""

    def forward(self, sets: Tensor, key_valid: Tensor) -> Tensor:
        weights = key_valid.to(sets.dtype)
        total = torch.einsum("nld,nl->nd", sets, weights)
        return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


class AttentivePool(nn.Module):
    """One learned query attends over each set: LayerNorm, multi-head attention, LayerNorm.

    Same layers as the reference head (keys and values from one bias-free linear, the query used
    as is, no output projection), plus a key mask so padded dates get no weight. Sets without a
    valid token attend to everything (no NaN) and their output is replaced by zeros.
    """

    def __init__(self, width: int, num_heads: int = POOL_HEADS):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} attention-pooling heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(width)
        self.to_kv = nn.Linear(width, 2 * width, bias=False)
        self.query = nn.Parameter(torch.empty(width))
        self.norm_out = nn.LayerNorm(width)
        nn.init.trunc_normal_(self.query, std=0.02)  # small: starts close to the mean of the set

    def forward(self, sets: Tensor, key_valid: Tensor) -> Tensor:
        keys, values = rearrange(
            self.to_kv(self.norm(sets)), "n l (two h d) -> two n h l d", two=2, h=self.num_heads
        )
        # One query over short sets (1 to a few dozen tokens) for every location of every sample:
        # two small contractions, not an attention kernel built for long sequences (SDPA launches
        # per (set, head) and its kernels fail past 65,535 sets, i.e. batch 64 at 32 x 32).
        query = rearrange(self.query.to(keys.dtype), "(h d) -> h d", h=self.num_heads)
        scores = torch.einsum("nhld,hd->nhl", keys, query).float() * keys.shape[-1] ** -0.5
        any_valid = key_valid.any(dim=1, keepdim=True)
        mask = rearrange(key_valid | ~any_valid, "n l -> n 1 l")
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(values.dtype)
        pooled = self.norm_out(rearrange(torch.einsum("nhl,nhld->nhd", weights, values), "n h d -> n (h d)"))
        return torch.where(any_valid, pooled, 0.0)


def make_pool(kind: DatePooling, width: int, num_heads: int = POOL_HEADS) -> nn.Module:
    """The set pool called ``kind``: ``attentive`` (learned) or ``mean`` (parameter-free)."""
    if kind == "attentive":
        return AttentivePool(width, num_heads)
    if kind == "mean":
        return MeanPool()
    raise ValueError(f"unknown date pooling {kind!r}; expected one of {list(DATE_POOLINGS)}")


class DatePool(nn.Module):
    """One modality's token maps ``(B, T, G, h, w, D)`` -> one map ``(B, D, size, size)``.

    Pools the (date x band group) tokens of every location, then resizes bilinearly to the
    reference grid ``size`` (pooling first: resizing one map is cheaper than resizing T * G).
    """

    def __init__(self, width: int, kind: DatePooling = "attentive", size: int | None = None):
        super().__init__()
        self.size = size
        self.pool = make_pool(kind, width)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        batch, height = tokens.shape[0], tokens.shape[3]
        pooled = self.pool(*token_sets(tokens, valid))
        maps = rearrange(pooled, "(b h w) d -> b d h w", b=batch, h=height)
        return maps if self.size is None else resample(maps, self.size)
