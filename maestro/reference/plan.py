"""From a reference MAESTRO state dict to this suite's configs and weights.

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

Image sizes, dates per series and band order are not stored either (the reference keeps them in
its dataset config, outside the checkpoint): they come from the modality registry, which follows
the reference's FLAIR-HUB config, unless overridden. The report notes which ones were assumed, and a
segmentation head's shape checks them (:mod:`maestro.reference.sizes`).

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

import logging
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, ModalityOverride
from maestro.models.config import SIZES, EncoderConfig, MAEConfig
from maestro.reference.sizes import KNOWN_TARGETS, ask, assumed_sizes, check_head_sizes

log = logging.getLogger(__name__)

ModelType = Literal["maestro-encoder", "maestro-mae", "maestro-segmenter"]
Weights = Literal["ema", "model"]

PREFIXES = {"ema": "ema_model.", "model": "model."}
REFERENCE_ENCODER_HEADS = {"tiny": 3, "small": 6, "medium": 12, "base": 12, "large": 16}
"""Encoder attention heads of the reference's size factories (head width 64)."""
REFERENCE_DECODER_HEAD_DIM = 32
"""Decoder head width of every reference size factory."""
REFERENCE_GRID = 160
"""Position grid of the reference FLAIR-HUB config (``grid_pos_enc``)."""
HEAD_POOLINGS = {"attentive": "attentive", "linear": "mean"}

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
POOL_PARTS = {
    "query": "query",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "norm_fc.weight": "norm_out.weight",
    "norm_fc.bias": "norm_out.bias",
    "to_kv.weight": "to_kv.weight",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_EMBED = re.compile(r"^patchify_bands\.(\d+)\.(conv|conv_skip|norm|norm_skip)\.(weight|bias)$")
_PIXELS = re.compile(r"^pixelify_bands\.(\d+)\.(conv|conv_skip)\.(weight|bias)$")


# --------------------------------------------------------------------------------------------
# What the keys say
# --------------------------------------------------------------------------------------------


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


def _stack(state: Mapping[str, Tensor], prefix: str) -> StackLayout | None:
    layers = {
        int(m.group(1)) for k in state if k.startswith(prefix) and (m := _LAYER.match(k[len(prefix) :]))
    }
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


def read_layout(state: Mapping[str, Tensor]) -> ReferenceLayout:
    """The reference architecture as its keys and shapes describe it (keys without prefix)."""
    band_groups: dict[str, dict[int, int]] = defaultdict(dict)
    patch_sizes: dict[str, int] = {}
    widths: set[int] = set()
    for key, value in state.items():
        parts = key.split(".", 2)
        if parts[0] != "patch_embed" or len(parts) < 3:
            continue
        match = _EMBED.match(parts[2])
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

    def stacks(root: str) -> dict[str, StackLayout]:
        names = list(
            dict.fromkeys(k.split(".")[1] for k in state if k.startswith(f"{root}.") and k.count(".") >= 2)
        )
        found = {}
        for name in names:
            layout = _stack(state, f"{root}.{name}.")
            if layout is not None:
                found[name] = layout
        return found

    heads: dict[str, HeadLayout] = {}
    classification: list[str] = []
    for name in dict.fromkeys(k.split(".")[1] for k in state if k.startswith("heads.")):
        conv = state.get(f"heads.{name}.conv.weight", state.get(f"heads.{name}.conv_skip.weight"))
        if conv is None:
            classification.append(name)
            continue
        pooling = "attentive" if f"heads.{name}.reduce.query" in state else "mean"
        heads[name] = HeadLayout(name, conv.shape[0], pooling)
    return ReferenceLayout(
        band_groups=groups,
        patch_sizes=patch_sizes,
        width=widths.pop(),
        encoders=stacks("encoder"),
        inter=_stack(state, "encoder_inter."),
        decoders=stacks("decoder"),
        has_enc_to_dec=any(k.startswith("enc_to_dec.") for k in state),
        heads=heads,
        classification_heads=classification,
    )


# --------------------------------------------------------------------------------------------
# Conversion plan: configs and the fate of every source key
# --------------------------------------------------------------------------------------------


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


@dataclass
class Conversion:
    """A converted model: what to write into a model folder."""

    model_type: ModelType
    config: Any
    """EncoderConfig, MAEConfig or SegmenterConfig."""
    state: dict[str, Tensor]
    report: ConversionReport
    task: dict[str, Any] | None = None


def _parse_overrides(overrides: Mapping[str, Any] | None) -> dict[str, ModalityOverride]:
    out = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, ModalityOverride):
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = ModalityOverride(**dict(value))
        else:
            raise ConfigError(
                f"overrides.{key}: expected a mapping or ModalityOverride, got {type(value).__name__}"
            )
    return out


def _modalities(
    layout: ReferenceLayout, overrides: Mapping[str, ModalityOverride]
) -> tuple[dict[str, ModalityOverride], dict[str, str]]:
    """Covered modalities (with the overrides their weights need) and uncovered ones (with why)."""
    covered: dict[str, ModalityOverride] = {}
    uncovered: dict[str, str] = {}
    for mod, sizes in layout.band_groups.items():
        entry = MODALITIES.get(mod)
        if entry is None or not entry.is_input:
            uncovered[mod] = "not an input modality of the suite's registry"
            continue
        given = overrides.get(mod, ModalityOverride())
        bands = tuple(given.bands) if given.bands is not None else entry.input_bands
        if sum(sizes) != len(bands):
            uncovered[mod] = (
                f"its patch embedding takes {sum(sizes)} bands, the registry's {mod} has {len(bands)} "
                f"({', '.join(bands)}); give the bands with an override if they are a subset"
            )
            continue
        patch = layout.patch_sizes[mod]
        token_groups = given.token_groups
        if token_groups is None and len(sizes) > 1:
            starts = [sum(sizes[:g]) for g in range(len(sizes))]
            token_groups = tuple(tuple(bands[s : s + n]) for s, n in zip(starts, sizes, strict=True))
        elif token_groups is not None and [len(g) for g in token_groups] != sizes:
            raise ConfigError(
                f"overrides.{mod}.token_groups {token_groups} do not match the checkpoint's band groups of "
                f"{sizes} bands"
            )
        if given.patch_size is not None and given.patch_size != patch:
            raise ConfigError(
                f"overrides.{mod}.patch_size {given.patch_size}: the checkpoint's patch size is {patch}"
            )
        covered[mod] = ModalityOverride(
            bands=given.bands,
            patch_size=patch if patch != entry.patch_size else None,
            image_size=given.image_size,
            num_dates=given.num_dates,
            token_groups=token_groups,
        )
    return covered, uncovered


def _match_streams(
    reference: list[str], ours: list[str], uncovered: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Reference stream name -> suite stream name, and the reference streams left without one."""
    matched = {name: name for name in reference if name in ours}
    left_reference = [name for name in reference if name not in matched]
    left_ours = [name for name in ours if name not in matched.values()]
    candidates = [name for name in left_reference if name not in uncovered]
    if len(left_ours) == 1 and len(candidates) == 1:  # one group named differently ("sen1" for "s1")
        matched[candidates[0]] = left_ours[0]
        left_reference.remove(candidates[0])
        left_ours = []
    if left_ours:
        raise ConfigError(
            f"the checkpoint's stream encoders {reference} do not match the suite's fusion groups {ours}: "
            f"no reference encoder for {left_ours}"
        )
    return matched, left_reference


def _encoder_heads(
    hyper: Mapping[str, Any], width: int, inner: int, given: int | None, report: ConversionReport
) -> int:
    if inner != width:
        raise ConfigError(
            f"attention width {inner} (to_qkv rows / 3) differs from the embedding width {width}; the suite's "
            "attention projects to the model width"
        )
    if given is not None:
        return given
    size = str(hyper.get("model_size", ""))
    heads = REFERENCE_ENCODER_HEADS.get(size)
    if heads is None or width % heads:
        heads = max(width // 64, 1)
        report.notes.append(
            f"encoder heads: model_size {size!r} gives no usable head count for width {width}; assumed "
            f"{heads} heads of 64 (pass {ask('num_heads')} if that is wrong)"
        )
    else:
        report.notes.append(
            f"encoder heads: {heads} (head width {width // heads}), the reference {size!r} factory's count; "
            "shapes cannot tell the head count"
        )
    return heads


@dataclass(frozen=True)
class ConversionOptions:
    """What the user decides about a conversion; everything else is read from the checkpoint."""

    weights: Weights = "ema"
    """The EMA copy (default) or the trained weights."""
    model_type: ModelType = "maestro-mae"
    """What the folder holds: the encoder, the whole MAE, or a segmenter with the reference head."""
    overrides: Mapping[str, Any] | None = None
    """Per-modality image sizes / dates the checkpoint does not store (registry defaults else)."""
    grid_size: int | None = None
    """Position grid (the reference's 160 for FLAIR-HUB by default)."""
    num_heads: int | None = None
    """Encoder heads (no tensor shape holds them; the reference's size table by default)."""
    decoder_heads: int | None = None
    """Decoder heads (default: decoder width / 32)."""
    target: str | None = None
    """Segmentation head of the reference to convert (``maestro-segmenter``)."""
    num_classes: int | None = None


DEFAULT_OPTIONS = ConversionOptions()


def plan_conversion(
    state: Mapping[str, Tensor],
    hyper_parameters: Mapping[str, Any] | None = None,
    options: ConversionOptions = DEFAULT_OPTIONS,
) -> Conversion:
    """Configs and converted weights of one reference state dict (module docstring).

    ``state`` holds the checkpoint's ``state_dict`` (``model.*`` and/or ``ema_model.*``, or bare
    keys); ``options.weights`` picks the EMA copy (default) or the trained one. Tensors may live
    on the meta device (shapes only). Every source key ends up in ``report.used`` or
    ``report.skipped``.
    """
    weights, model_type, overrides = options.weights, options.model_type, options.overrides
    grid_size, num_heads, decoder_heads = options.grid_size, options.num_heads, options.decoder_heads
    target, num_classes = options.target, options.num_classes
    hyper = dict(hyper_parameters or {})
    if model_type not in ("maestro-encoder", "maestro-mae", "maestro-segmenter"):
        raise ConfigError(
            f"model_type {model_type!r} is not maestro-encoder, maestro-mae or maestro-segmenter"
        )
    prefix = _choose_prefix(state, weights)
    report = ConversionReport(prefix=prefix)
    own: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            own[key[len(prefix) :]] = value
        else:
            other = "trained" if weights == "ema" else "EMA"
            report.skipped[key] = f"the {other} copy of the weights (weights={weights!r} was asked for)"
    layout = read_layout(own)

    given = _parse_overrides(overrides)
    stray = sorted(set(given) - set(layout.band_groups))
    if stray:
        raise ConfigError(
            f"overrides for {stray}: the checkpoint has no such modality ({list(layout.band_groups)})"
        )
    covered, uncovered = _modalities(layout, given)
    report.unsupported_modalities = uncovered
    if not covered:
        raise ConfigError(
            f"none of the checkpoint's modalities is covered by the suite's registry: {uncovered}"
        )
    if uncovered:
        log.warning(
            "the checkpoint's modalities %s are not covered by the suite's registry and are left out: %s",
            sorted(uncovered),
            "; ".join(f"{k}: {v}" for k, v in uncovered.items()),
        )

    fusion = str(hyper.get("fusion_mode", hyper.get("multimodal", "")))
    reference_streams = list(layout.encoders)
    if not fusion:
        fusion = "shared" if reference_streams == ["shared"] else "group"
    if fusion == "group" and set(reference_streams) == set(layout.band_groups):
        fusion = "mod"  # every modality alone in its group: the suite's 'mod' mode is that
    if fusion not in ("shared", "monotemp", "mod", "group"):
        raise ConfigError(f"fusion_mode {fusion!r} of the checkpoint has no counterpart in the suite")
    inter_depth = layout.inter.depth if layout.inter is not None else 0
    if inter_depth and fusion in ("shared", "monotemp"):
        raise ConfigError(f"late-fusion blocks with the frame-wise fusion mode {fusion!r} are not supported")
    stored_inter = hyper.get("inter_depth")
    if stored_inter is not None and int(stored_inter) != inter_depth:
        report.notes.append(
            f"hyper-parameter inter_depth {stored_inter} but {inter_depth} late-fusion blocks stored"
        )

    if not layout.encoders:
        raise ConfigError("no encoder.<group>.* tensors: the checkpoint holds no stream encoder")
    depths = {s.depth for s in layout.encoders.values()}
    if len(depths) != 1:
        raise ConfigError(
            f"stream encoders of different depths: { {k: s.depth for k, s in layout.encoders.items()} }"
        )
    first = next(iter(layout.encoders.values()))
    width = layout.width
    heads = _encoder_heads(hyper, width, first.inner, num_heads, report)
    size_name = str(hyper.get("model_size", "medium"))
    try:
        encoder_config = EncoderConfig(
            modalities=tuple(covered),
            overrides={k: v for k, v in covered.items() if v != ModalityOverride()},
            size=size_name if size_name in SIZES else "medium",
            fusion=fusion,
            inter_depth=inter_depth,
            grid_size=grid_size or REFERENCE_GRID,
            width=width,
            depth=first.depth + inter_depth,
            num_heads=heads,
            mlp_ratio=first.mlp_hidden / width,
            date_offset="float32",
            day_of_year_origin=1,
        )
    except ConfigError as error:
        raise ConfigError(
            f"{error}. The checkpoint does not store image sizes or dates: they come from the registry unless "
            f"given: {ask('overrides')}"
        ) from None
    if encoder_config.transformer.mlp_hidden != first.mlp_hidden:
        raise ConfigError(f"MLP hidden size {first.mlp_hidden} is not representable as width x ratio")
    report.notes.append(
        "date code as in the reference: day of year counted from 1 (day_of_year_origin=1) and the year "
        "offset rounded as its float32 arithmetic does (date_offset='float32')"
    )
    assumed = assumed_sizes(encoder_config, given)
    if assumed:
        report.notes.append(assumed)
    check_head_sizes(
        {name: head.out_channels for name, head in layout.heads.items()},
        encoder_config,
        given,
        report.notes,
        strict=model_type == "maestro-segmenter",
    )

    from maestro.models.encoder import MaestroEncoder

    with torch.device("meta"):
        our_streams = MaestroEncoder(encoder_config, initialise=False).stream_names
    stream_of, orphan_streams = _match_streams(reference_streams, our_streams, uncovered)

    mapped: dict[str, Tensor] = {}
    converter = _Mapper(own, prefix, report, mapped)
    for mod in layout.band_groups:
        if mod in uncovered:
            converter.skip_prefix(f"patch_embed.{mod}.", f"modality {mod} is not covered by the registry")
        else:
            converter.embed(mod, f"encoder.patch_embed.{mod}.")
    for name in reference_streams:
        if name in orphan_streams:
            converter.skip_prefix(f"encoder.{name}.", f"stream encoder {name} of uncovered modalities")
        else:
            converter.stack(f"encoder.{name}.", f"encoder.streams.{stream_of[name]}.")
    if layout.inter is not None:
        converter.stack("encoder_inter.", "encoder.late_fusion.")

    config: Any = encoder_config
    task = None
    decoder_parts = ("enc_to_dec.", "decoder.", "mask_token.", "embed_to_rec.")
    if model_type == "maestro-mae":
        config = _plan_mae(
            layout, hyper, encoder_config, converter, stream_of, orphan_streams, uncovered, decoder_heads
        )
    else:
        for part in decoder_parts:
            converter.skip_prefix(part, f"pretraining decoder ({part[:-1]}), not part of a {model_type}")
    if model_type == "maestro-segmenter":
        config, task = _plan_segmenter(layout, encoder_config, converter, target, num_classes)
    else:
        converter.skip_prefix("heads.", f"segmentation/classification head, not part of a {model_type}")
    converter.skip_rest("not a part of the reference MAE this converter knows")

    state_out = mapped
    if model_type == "maestro-encoder":  # the encoder's own layout, without the MAE's "encoder." prefix
        state_out = {key.removeprefix("encoder."): value for key, value in mapped.items()}
        report.used = {
            key: [t.removeprefix("encoder.") for t in targets] for key, targets in report.used.items()
        }
    _check_shapes(model_type, config, state_out, report)
    return Conversion(model_type, config, state_out, report, task)


def _choose_prefix(state: Mapping[str, Tensor], weights: Weights) -> str:
    if weights not in PREFIXES:
        raise ConfigError(f"weights {weights!r} is not 'ema' or 'model'")
    present = {p for p in PREFIXES.values() if any(k.startswith(p) for k in state)}
    if not present:
        return ""  # a bare state dict of the model
    wanted = PREFIXES[weights]
    if wanted in present:
        return wanted
    fallback = present.pop()
    log.warning("the checkpoint holds no %s weights; converting %s* instead", wanted, fallback)
    return fallback


class _Mapper:
    """Moves source tensors to suite keys, recording each move in the report."""

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
        for key in [k for k in self.state if k.startswith(f"patch_embed.{mod}.")]:
            match = _EMBED.match(key[len(f"patch_embed.{mod}.") :])
            if match is None:
                continue  # left for skip_rest (e.g. the reference's optional unpooling layers)
            group, layer, kind = match.groups()
            ours = "proj" if layer.startswith("conv") else "norm"
            self.put(key, f"{target}groups.{group}.{ours}.{kind}")

    def stack(self, source: str, target: str) -> None:
        for key in [k for k in self.state if k.startswith(source)]:
            rest = key[len(source) :]
            if rest in ("norm.weight", "norm.bias"):
                self.put(key, f"{target}{rest}")
                continue
            match = _LAYER.match(rest)
            if match and match.group(2) in BLOCK_PARTS:
                self.put(key, f"{target}blocks.{match.group(1)}.{BLOCK_PARTS[match.group(2)]}")
        # vit-pytorch drops the output projection when heads == 1 and dim_head == dim
        blocks = {
            int(m.group(1))
            for k in self.state
            if k.startswith(source) and (m := _LAYER.match(k[len(source) :]))
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


def _plan_mae(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    encoder_config: EncoderConfig,
    mapper: _Mapper,
    stream_of: Mapping[str, str],
    orphans: list[str],
    uncovered: Mapping[str, str],
    decoder_heads: int | None,
) -> MAEConfig:
    if not layout.decoders:
        raise ConfigError("the checkpoint holds no decoder.<group> weights: convert it as a maestro-encoder")
    report = mapper.report
    depths = {s.depth for s in layout.decoders.values()}
    widths = {s.width for s in layout.decoders.values()}
    hidden = {s.mlp_hidden for s in layout.decoders.values()}
    if len(depths) != 1 or len(widths) != 1 or len(hidden) != 1:
        raise ConfigError("stream decoders of different sizes are not supported")
    decoder = next(iter(layout.decoders.values()))
    if decoder.inner != decoder.width:
        raise ConfigError(
            f"decoder attention width {decoder.inner} differs from the decoder width {decoder.width}"
        )
    if decoder_heads is None:
        if decoder.width % REFERENCE_DECODER_HEAD_DIM:
            raise ConfigError(
                f"decoder width {decoder.width} is not a multiple of the reference's head width "
                f"{REFERENCE_DECODER_HEAD_DIM}: shapes cannot tell the decoder's head count, pass "
                f"{ask('decoder_heads')}"
            )
        decoder_heads = decoder.width // REFERENCE_DECODER_HEAD_DIM
        report.notes.append(
            f"decoder heads: {decoder_heads} of width {REFERENCE_DECODER_HEAD_DIM} (the reference's)"
        )
    mask = hyper.get("mask") if isinstance(hyper.get("mask"), Mapping) else {}
    if mask.get("mask_scale"):
        report.notes.append(
            f"mask_scale {mask['mask_scale']} has no counterpart; the suite masks a fixed ratio"
        )
    config = MAEConfig(
        encoder=encoder_config,
        mask_ratio=float(mask.get("mask_ratio", 0.75)),
        p_drop_modality=float(mask.get("mask_mod") or 0.0),
        p_drop_date=float(mask.get("mask_dates") or 0.0),
        p_drop_location=float(mask.get("mask_loc") or 0.0),
        p_drop_band_group=float(mask.get("mask_bands") or 0.0),
        decoder_width=decoder.width,
        decoder_depth=decoder.depth,
        decoder_heads=decoder_heads,
        decoder_mlp_hidden=decoder.mlp_hidden,
    )
    state = mapper.state
    for name in layout.decoders:
        if name in orphans or name not in stream_of:
            mapper.skip_prefix(f"decoder.{name}.", f"stream decoder {name} of uncovered modalities")
            mapper.skip_prefix(
                f"enc_to_dec.{name}.", f"projection of the stream {name} of uncovered modalities"
            )
            continue
        ours = stream_of[name]
        mapper.stack(f"decoder.{name}.", f"decoders.{ours}.")
        if layout.has_enc_to_dec:
            mapper.put(f"enc_to_dec.{name}.weight", f"to_decoder.{ours}.weight")
            mapper.put(f"enc_to_dec.{name}.bias", f"to_decoder.{ours}.bias")
        else:
            like = state[f"decoder.{name}.norm.weight"]
            mapper.out[f"to_decoder.{ours}.weight"] = torch.eye(
                decoder.width, dtype=like.dtype, device=like.device
            )
            mapper.out[f"to_decoder.{ours}.bias"] = torch.zeros_like(like)
    if not layout.has_enc_to_dec:
        report.notes.append(
            "the reference has no encoder-to-decoder projection (same widths): identity written"
        )
    for mod, groups in layout.band_groups.items():
        if mod in uncovered:
            for start in (f"mask_token.{mod}", f"embed_to_rec.{mod}."):
                mapper.skip_prefix(start, f"modality {mod} is not covered by the registry")
            continue
        token = state.get(f"mask_token.{mod}")
        if token is None:
            raise ConfigError(f"{mapper.prefix}mask_token.{mod} is missing from the checkpoint")
        if token.numel() != len(groups) * decoder.width:
            raise ConfigError(
                f"{mapper.prefix}mask_token.{mod}: shape {tuple(token.shape)} is not (1, {len(groups)}, 1, 1, "
                f"{decoder.width})"
            )
        mapper.put(f"mask_token.{mod}", f"mask_tokens.{mod}.token", token.reshape(len(groups), decoder.width))
        patch = layout.patch_sizes[mod]
        for key in [k for k in state if k.startswith(f"embed_to_rec.{mod}.")]:
            match = _PIXELS.match(key[len(f"embed_to_rec.{mod}.") :])
            if match is None:
                continue
            group, _, kind = match.groups()
            channels = groups[int(group)]
            mapper.put(
                key, f"heads.{mod}.groups.{group}.{kind}", _pixel_rows(state[key], channels, patch, key)
            )
    return config


def _pixel_rows(value: Tensor, channels: int, patch: int, key: str) -> Tensor:
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


def _plan_segmenter(
    layout: ReferenceLayout,
    encoder_config: EncoderConfig,
    mapper: _Mapper,
    target: str | None,
    num_classes: int | None,
) -> tuple[Any, dict[str, Any] | None]:
    from maestro.models.heads.options import reference_grid
    from maestro.models.segmenter_config import SegmenterConfig

    if not layout.heads:
        raise ConfigError(
            "the checkpoint holds no segmentation head (heads.<target>.conv): convert it as a maestro-mae or "
            "maestro-encoder and fine-tune a head"
        )
    if target is None:
        if len(layout.heads) > 1:
            raise ConfigError(
                f"the checkpoint has several segmentation heads {sorted(layout.heads)}: pick one with "
                f"{ask('target')}"
            )
        target = next(iter(layout.heads))
    if target not in layout.heads:
        raise ConfigError(
            f"no segmentation head {target!r} in the checkpoint (chosen with {ask('target')}); its heads: "
            f"{sorted(layout.heads)}"
        )
    head = layout.heads[target]
    task = None
    if num_classes is None:
        if target not in KNOWN_TARGETS:
            raise ConfigError(
                f"the number of classes of head {target!r} is not known to the converter: pass "
                f"{ask('num_classes')}; its conv has {head.out_channels} = classes x f^2 outputs"
            )
        from maestro.tasks import get_task

        task_name, level = KNOWN_TARGETS[target]
        label = get_task(task_name).target(level)
        num_classes = label.num_classes
        task = {
            "name": label.task,
            "level": label.level,
            "class_names": list(label.names[:num_classes]),
            "ignored": sorted(v for v in label.nomenclature.ignored if v < num_classes),
        }
    factor = math.isqrt(head.out_channels // num_classes)
    if factor * factor * num_classes != head.out_channels:
        raise ConfigError(
            f"heads.{target}.conv has {head.out_channels} outputs, not {num_classes} classes x a square number"
        )
    grid = reference_grid(encoder_config.specs)
    config = SegmenterConfig(
        encoder=encoder_config,
        num_classes=num_classes,
        head="maestro",
        label_size=factor * grid,
        date_pooling=HEAD_POOLINGS[head.pooling],
    )
    source = f"heads.{target}."
    for part, ours in POOL_PARTS.items():
        if f"{source}reduce.{part}" in mapper.state:
            mapper.put(f"{source}reduce.{part}", f"decoder.pool.{ours}")
    for kind in ("weight", "bias"):
        name = (
            f"{source}conv.{kind}" if f"{source}conv.{kind}" in mapper.state else f"{source}conv_skip.{kind}"
        )
        mapper.put(name, f"head.conv.{kind}")
    mapper.report.notes.append(
        f"segmentation head {target!r}: {num_classes} classes, {factor}x{factor} label pixels per token of the "
        f"{grid}x{grid} grid ({HEAD_POOLINGS[head.pooling]} pooling)"
    )
    mapper.skip_prefix("heads.", f"another head than {target!r}")
    return config, task


def build_model(model_type: ModelType, config: Any) -> torch.nn.Module:
    """The suite network a converted config describes (uninitialised weights)."""
    if model_type == "maestro-encoder":
        from maestro.models.encoder import MaestroEncoder

        return MaestroEncoder(config, initialise=False)
    if model_type == "maestro-mae":
        from maestro.models.mae import MaestroMAE

        return MaestroMAE(config)
    from maestro.models.segmenter import MaestroSegmenter

    return MaestroSegmenter(config)


def _check_shapes(
    model_type: ModelType, config: Any, state: Mapping[str, Tensor], report: ConversionReport
) -> None:
    """Every converted tensor fits the suite model, and the model gets every tensor it has."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(model_type, config).state_dict().items()}
    sources = {target: source for source, targets in report.used.items() for target in targets}
    wrong = [
        f"{sources.get(key, key)} -> {key}: {tuple(value.shape)}, the {model_type} expects {expected[key]}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != expected[key]
    ]
    if wrong:
        raise ConfigError("shape mismatch: " + "; ".join(wrong[:10]))
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ConfigError(
            f"the converted weights do not cover the {model_type}: missing {missing[:10]}, unexpected "
            f"{[f'{sources.get(k, k)} -> {k}' for k in extra[:10]]}"
        )
