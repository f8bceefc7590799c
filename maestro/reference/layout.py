"""What a reference MAESTRO state dict says about its model, read from its keys and shapes.

The architecture is read from the tensors, never from the checkpoint's ``model_size`` alone:

=================================  ==================================================================
what                               where it comes from
=================================  ==================================================================
modalities, band groups, patch     ``patch_embed.<mod>.patchify_bands.<g>.conv.weight`` (E, C_g, P, P)
width E                            the same tensors
stream encoders and their depth    ``encoder.<group>.layers.<i>.*``
late-fusion depth                  ``encoder_inter.layers.<i>.*`` (checked against ``inter_depth``)
MLP hidden size                    ``...layers.0.1.net.1.weight``
decoder width, depth, MLP          ``decoder.<group>.*`` (MLP hidden = E x ratio in the reference)
segmentation head                  ``heads.<target>.conv`` (K f^2, E, 1, 1) and ``heads.<target>.reduce``
attention heads                    not in any shape: the reference factory of ``model_size``
                                   (3/6/12/16 encoder heads; decoder heads of width 32), or given
=================================  ==================================================================
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from maestro.errors import ConfigError
from maestro.reference.keys import EMBED, LAYER


@dataclass
class StackLayout:
    """One vit-pytorch Transformer of the reference: blocks, width, MLP size."""

    depth: int
    width: int
    inner: int
    """Attention width (heads x head dim): rows of ``to_qkv`` / 3."""
    mlp_hidden: int


@dataclass
class HeadLayout:
    """One segmentation head of the reference (``PixelifyHead``)."""

    name: str
    out_channels: int
    pooling: str
    """``attentive`` (has ``reduce.*`` weights) or ``mean``."""


@dataclass
class ReferenceLayout:
    """Everything the tensors of one prefix say about the reference model."""

    band_groups: dict[str, list[int]]
    """Modality -> channels of each band group, in checkpoint order."""
    patch_sizes: dict[str, int]
    width: int
    encoders: dict[str, StackLayout]
    inter: StackLayout | None
    decoders: dict[str, StackLayout]
    has_enc_to_dec: bool
    heads: dict[str, HeadLayout]
    classification_heads: list[str]


def read_layout(state: Mapping[str, Tensor]) -> ReferenceLayout:
    """The reference architecture as its keys and shapes describe it (keys without prefix)."""
    groups, patch_sizes, width = read_patch_embeddings(state)
    heads, classification = read_heads(state)
    return ReferenceLayout(
        band_groups=groups,
        patch_sizes=patch_sizes,
        width=width,
        encoders=read_stacks(state, "encoder"),
        inter=read_stack(state, "encoder_inter."),
        decoders=read_stacks(state, "decoder"),
        has_enc_to_dec=any(k.startswith("enc_to_dec.") for k in state),
        heads=heads,
        classification_heads=classification,
    )


def read_patch_embeddings(state: Mapping[str, Tensor]) -> tuple[dict[str, list[int]], dict[str, int], int]:
    """Modality -> band-group channels and patch size, and the embedding width they share."""
    band_groups: dict[str, dict[int, int]] = defaultdict(dict)
    patch_sizes: dict[str, int] = {}
    widths: set[int] = set()
    for key, value in state.items():
        parts = key.split(".", 2)
        if parts[0] != "patch_embed" or len(parts) < 3:
            continue
        match = EMBED.match(parts[2])
        if match and match.group(2) in ("conv", "conv_skip") and match.group(3) == "weight":
            if value.ndim != 4 or value.shape[2] != value.shape[3]:
                raise ConfigError(
                    f"{key}: expected a square Conv2d weight (E, C, P, P), got {tuple(value.shape)}"
                )
            band_groups[parts[1]][int(match.group(1))] = value.shape[1]
            patch_sizes.setdefault(parts[1], value.shape[2])
            if patch_sizes[parts[1]] != value.shape[2]:
                raise ConfigError(f"{key}: band groups of {parts[1]} use different patch sizes")
            widths.add(value.shape[0])
    if not band_groups:
        raise ConfigError(
            "no patch_embed.<modality>.patchify_bands.<g>.conv.weight tensors: this is not a reference "
            "MAESTRO state dict"
        )
    if len(widths) != 1:
        raise ConfigError(f"patch embeddings of different widths {sorted(widths)}")
    groups = {}
    for mod, sizes in band_groups.items():
        if sorted(sizes) != list(range(len(sizes))):
            raise ConfigError(f"patch_embed.{mod}: band groups {sorted(sizes)} are not 0..{len(sizes) - 1}")
        groups[mod] = [sizes[g] for g in range(len(sizes))]
    return groups, patch_sizes, widths.pop()


def read_stack(state: Mapping[str, Tensor], prefix: str) -> StackLayout | None:
    """The Transformer under ``prefix`` (None: there is none)."""
    layers = {int(m.group(1)) for k in state if k.startswith(prefix) and (m := LAYER.match(k[len(prefix) :]))}
    if not layers and f"{prefix}norm.weight" not in state:
        return None
    depth = max(layers) + 1 if layers else 0
    if sorted(layers) != list(range(depth)):
        raise ConfigError(f"{prefix}layers: block indices {sorted(layers)} are not 0..{depth - 1}")
    norm = state.get(f"{prefix}norm.weight")
    if norm is None:
        raise ConfigError(f"{prefix}norm.weight is missing: every reference Transformer ends in a LayerNorm")
    width = norm.shape[0]
    inner = width
    hidden = 0
    if depth:
        qkv = state.get(f"{prefix}layers.0.0.to_qkv.weight")
        fc1 = state.get(f"{prefix}layers.0.1.net.1.weight")
        if qkv is None or fc1 is None:
            raise ConfigError(f"{prefix}layers.0: to_qkv or the MLP weight is missing")
        inner, hidden = qkv.shape[0] // 3, fc1.shape[0]
    return StackLayout(depth, width, inner, hidden)


def read_stacks(state: Mapping[str, Tensor], root: str) -> dict[str, StackLayout]:
    """One Transformer per stream under ``root`` (``encoder``, ``decoder``), by stream name."""
    names = list(
        dict.fromkeys(k.split(".")[1] for k in state if k.startswith(f"{root}.") and k.count(".") >= 2)
    )
    found = {}
    for name in names:
        layout = read_stack(state, f"{root}.{name}.")
        if layout is not None:
            found[name] = layout
    return found


def read_heads(state: Mapping[str, Tensor]) -> tuple[dict[str, HeadLayout], list[str]]:
    """Segmentation heads by target, and the names of the other (classification) heads."""
    heads: dict[str, HeadLayout] = {}
    classification: list[str] = []
    for name in dict.fromkeys(k.split(".")[1] for k in state if k.startswith("heads.")):
        conv = state.get(f"heads.{name}.conv.weight", state.get(f"heads.{name}.conv_skip.weight"))
        if conv is None:
            classification.append(name)
            continue
        pooling = "attentive" if f"heads.{name}.reduce.query" in state else "mean"
        heads[name] = HeadLayout(name, conv.shape[0], pooling)
    return heads, classification
