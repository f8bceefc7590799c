"""The one transformer implementation every encoder, late-fusion stack and decoder is built from.

Pre-norm blocks, qkv without bias, attention through ``F.scaled_dot_product_attention`` (fused
kernels on GPU, bf16-friendly) with an optional key padding mask, timm ``Mlp`` and ``DropPath``,
and a final LayerNorm per stack. Parameter names follow timm's ViT (``blocks.0.attn.qkv``...).
"""

from __future__ import annotations

from collections.abc import Collection

import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp
from torch import Tensor, nn


def attention_mask(key_valid: Tensor | None) -> Tensor | None:
    """``(B, L)`` bool (True = may be attended) -> SDPA mask ``(B, 1, 1, L)``.

    A row without any valid key (a sample whose tokens in this sequence are all padding) would
    give NaN; such rows attend to everything instead, their outputs are never used.
    """
    if key_valid is None:
        return None
    key_valid = key_valid | ~key_valid.any(dim=-1, keepdim=True)
    return rearrange(key_valid, "b l -> b 1 1 l")


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, width)``; ``mask`` from :func:`attention_mask` or None."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden_features=mlp_hidden, act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stack(nn.Module):
    """A sequence of blocks followed by a final LayerNorm."""

    def __init__(
        self,
        width: int,
        depth: int,
        num_heads: int,
        mlp_hidden: int,
        drop_path: float | list[float] = 0.0,
    ):
        super().__init__()
        rates = drop_path if isinstance(drop_path, list) else [drop_path] * depth
        if len(rates) != depth:
            raise ValueError(f"{len(rates)} drop-path rates for {depth} blocks")
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_hidden, rate) for rate in rates)
        self.norm = nn.LayerNorm(width)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(
        self,
        x: Tensor,
        key_valid: Tensor | None = None,
        collect: Collection[int] = (),
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Run all blocks; returns the normed output and the outputs of blocks in ``collect``.

        ``collect`` holds 1-based block indices of this stack. Block ``depth`` (the last) is
        returned after the final LayerNorm, i.e. equal to the stack output.
        """
        mask = attention_mask(key_valid)
        collected: dict[int, Tensor] = {}
        for index, block in enumerate(self.blocks, start=1):
            x = block(x, mask)
            if index in collect and index != self.depth:
                collected[index] = x
        x = self.norm(x)
        if self.depth in collect:
            collected[self.depth] = x
        return x, collected
