"""Reference state-dict keys, where each one goes in the suite's layout, and the record of it.

Key mapping (``<p>`` is ``model.`` or ``ema_model.``; vit-pytorch blocks become timm-named blocks)::

    <p>patch_embed.<mod>.patchify_bands.<g>.conv|norm   -> patch_embed.<mod>.groups.<g>.proj|norm
    <p>encoder.<group>.layers.<i>.0.norm|to_qkv|to_out.0 -> streams.<stream>.blocks.<i>.norm1|attn.qkv|attn.proj
    <p>encoder.<group>.layers.<i>.1.net.0|1|4           -> streams.<stream>.blocks.<i>.norm2|mlp.fc1|mlp.fc2
    <p>encoder.<group>.norm                              -> streams.<stream>.norm
    <p>encoder_inter.*                                   -> late_fusion.*
    <p>enc_to_dec.<group>    -> to_decoder.<stream>      (identity when the reference has none)
    <p>decoder.<group>.*     -> decoders.<stream>.*
    <p>mask_token.<mod>      (1, G, 1, 1, Dd) -> mask_tokens.<mod>.token (G, Dd)
    <p>embed_to_rec.<mod>.pixelify_bands.<g>.conv  -> heads.<mod>.groups.<g>  (rows (p1 p2 c) -> (c p1 p2))
    <p>heads.<t>.reduce.query|norm|to_kv|norm_fc   -> decoder.pool.query|norm|to_kv|norm_out
    <p>heads.<t>.conv                              -> head.conv    (same (p1 p2 class) channel order)

Token order inside a stream differs when a modality has several band groups (the reference puts
band groups outside dates, the suite dates outside band groups). Attention without positional
bias is permutation-equivariant, so this changes no output, only where a token sits in the
sequence; nothing needs converting.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from maestro.errors import ConfigError

BLOCK_PARTS = {
    "0.norm.weight": "norm1.weight",
    "0.norm.bias": "norm1.bias",
    "0.to_qkv.weight": "attn.qkv.weight",
    "0.to_out.0.weight": "attn.proj.weight",
    "0.to_out.0.bias": "attn.proj.bias",
    "1.net.0.weight": "norm2.weight",
    "1.net.0.bias": "norm2.bias",
    "1.net.1.weight": "mlp.fc1.weight",
    "1.net.1.bias": "mlp.fc1.bias",
    "1.net.4.weight": "mlp.fc2.weight",
    "1.net.4.bias": "mlp.fc2.bias",
}
"""A vit-pytorch block's parameters -> the timm-named block's."""
POOL_PARTS = {
    "query": "query",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "norm_fc.weight": "norm_out.weight",
    "norm_fc.bias": "norm_out.bias",
    "to_kv.weight": "to_kv.weight",
}
"""The reference head's attentive date pooling (``reduce``) -> the suite decoder's ``pool``."""
LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
EMBED = re.compile(r"^patchify_bands\.(\d+)\.(conv|conv_skip|norm|norm_skip)\.(weight|bias)$")
PIXELS = re.compile(r"^pixelify_bands\.(\d+)\.(conv|conv_skip)\.(weight|bias)$")


@dataclass
class ConversionReport:
    """Where every source tensor went (or why it did not)."""

    prefix: str
    used: dict[str, list[str]] = field(default_factory=dict)
    """Source key -> the suite key(s) it became."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Source key -> why it is not in the converted model."""
    unsupported_modalities: dict[str, str] = field(default_factory=dict)
    """Reference modality -> why the registry does not cover it."""
    notes: list[str] = field(default_factory=list)
    """Assumptions and synthesised weights, in words."""

    def skipped_summary(self) -> dict[str, int]:
        """Reason -> number of source tensors skipped for it."""
        counts: dict[str, int] = defaultdict(int)
        for reason in self.skipped.values():
            counts[reason] += 1
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights_prefix": self.prefix,
            "converted_tensors": len(self.used),
            "skipped": self.skipped_summary(),
            "unsupported_modalities": dict(self.unsupported_modalities),
            "notes": list(self.notes),
        }


class KeyMapper:
    """Moves source tensors (keys without the weights prefix) to suite keys, recording each move in
    the report, so that every source key ends up used or skipped with a reason."""

    def __init__(
        self, state: Mapping[str, Tensor], prefix: str, report: ConversionReport, out: dict[str, Tensor]
    ):
        self.state, self.prefix, self.report, self.out = state, prefix, report, out
        self.done: set[str] = set()

    def put(self, source: str, target: str, value: Tensor | None = None) -> None:
        if source not in self.state:
            raise ConfigError(f"{self.prefix}{source} is missing from the checkpoint")
        self.out[target] = self.state[source] if value is None else value
        self.report.used.setdefault(self.prefix + source, []).append(target)
        self.done.add(source)

    def skip_prefix(self, start: str, reason: str) -> None:
        for key in self.state:
            if key.startswith(start) and key not in self.done:
                self.report.skipped[self.prefix + key] = reason
                self.done.add(key)

    def skip_rest(self, reason: str) -> None:
        for key in self.state:
            if key not in self.done:
                self.report.skipped[self.prefix + key] = reason
                self.done.add(key)

    def embed(self, mod: str, target: str) -> None:
        """One modality's patch embedding (every band group's conv and norm)."""
        for key in [k for k in self.state if k.startswith(f"patch_embed.{mod}.")]:
            match = EMBED.match(key[len(f"patch_embed.{mod}.") :])
            if match is None:
                continue  # left for skip_rest (e.g. the reference's optional unpooling layers)
            group, layer, kind = match.groups()
            ours = "proj" if layer.startswith("conv") else "norm"
            self.put(key, f"{target}groups.{group}.{ours}.{kind}")

    def stack(self, source: str, target: str) -> None:
        """One vit-pytorch Transformer (blocks and final norm) as timm-named blocks."""
        for key in [k for k in self.state if k.startswith(source)]:
            rest = key[len(source) :]
            if rest in ("norm.weight", "norm.bias"):
                self.put(key, f"{target}{rest}")
                continue
            match = LAYER.match(rest)
            if match and match.group(2) in BLOCK_PARTS:
                self.put(key, f"{target}blocks.{match.group(1)}.{BLOCK_PARTS[match.group(2)]}")
        # vit-pytorch drops the output projection when heads == 1 and dim_head == dim
        blocks = {
            int(m.group(1))
            for k in self.state
            if k.startswith(source) and (m := LAYER.match(k[len(source) :]))
        }
        for index in sorted(blocks):
            if f"{source}layers.{index}.0.to_out.0.weight" not in self.state:
                width = self.state[f"{source}norm.weight"].shape[0]
                like = self.state[f"{source}norm.weight"]
                self.out[f"{target}blocks.{index}.attn.proj.weight"] = torch.eye(
                    width, dtype=like.dtype, device=like.device
                )
                self.out[f"{target}blocks.{index}.attn.proj.bias"] = torch.zeros_like(like)
                self.report.notes.append(f"{source}layers.{index}: no output projection (identity written)")


def pixel_rows(value: Tensor, channels: int, patch: int, key: str) -> Tensor:
    """Reference 1x1-conv rows ordered (p1, p2, c) -> the suite's pixel-head rows (c, p1, p2)."""
    rows = channels * patch * patch
    if value.shape[0] != rows:
        raise ConfigError(
            f"{key}: {value.shape[0]} output channels, expected {channels} bands x {patch}^2 = {rows}"
        )
    trailing = value.shape[1:2]  # weight: (rows, Dd[, 1, 1]) -> (rows, Dd); bias: (rows,)
    reordered = value.reshape(patch, patch, channels, *trailing).permute(
        2, 0, 1, *range(3, 3 + len(trailing))
    )
    return reordered.reshape(rows, *trailing).contiguous()
