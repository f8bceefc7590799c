"""The encoder every converted model holds: its modalities, fusion and size, then its tensors.

Image sizes, dates per series and band order are not stored in a reference checkpoint (the
reference keeps them in its dataset config): they come from the modality registry, which follows
the reference's FLAIR-HUB config, unless overridden. The report notes which ones were assumed, and
a segmentation head's shape checks them (:mod:`maestro.reference.sizes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, ModalityOverride
from maestro.models.config import SIZES, EncoderConfig
from maestro.models.encoder import MaestroEncoder
from maestro.reference.keys import ConversionReport, KeyMapper
from maestro.reference.layout import ReferenceLayout
from maestro.reference.options import ConversionOptions, ask
from maestro.reference.sizes import assumed_sizes, check_head_sizes

log = logging.getLogger(__name__)

REFERENCE_ENCODER_HEADS = {"tiny": 3, "small": 6, "medium": 12, "base": 12, "large": 16}
"""Encoder attention heads of the reference's size factories (head width 64)."""
REFERENCE_GRID = 160
"""Position grid of the reference FLAIR-HUB config (``grid_pos_enc``)."""
FUSION_MODES = ("shared", "monotemp", "mod", "group")


@dataclass(frozen=True)
class EncoderPlan:
    """The converted encoder, and how the reference's modalities and streams map onto it."""

    config: EncoderConfig
    uncovered: Mapping[str, str]
    """Reference modality -> why the suite's registry does not cover it (left out)."""
    stream_of: Mapping[str, str]
    """Reference stream -> the suite's stream."""
    orphans: list[str]
    """Reference streams of uncovered modalities only (left out)."""


def plan_encoder(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    options: ConversionOptions,
    mapper: KeyMapper,
    strict_sizes: bool,
) -> EncoderPlan:
    """Modalities, fusion, size, the sizes the checkpoint leaves out, then the encoder's tensors.

    ``strict_sizes``: image sizes that the checkpoint's segmentation head contradicts are refused
    (a segmenter is converted), not only warned about.
    """
    report = mapper.report
    given, covered, uncovered = plan_modalities(layout, options.overrides, report)
    fusion, inter_depth = fusion_mode(layout, hyper, report)
    config = encoder_config(layout, hyper, covered, fusion, inter_depth, options, report)
    note_sizes(layout, config, given, report, strict_sizes)
    stream_of, orphans = map_encoder(layout, config, mapper, uncovered)
    return EncoderPlan(config, uncovered, stream_of, orphans)


def plan_modalities(
    layout: ReferenceLayout, overrides: Mapping[str, Any] | None, report: ConversionReport
) -> tuple[dict[str, ModalityOverride], dict[str, ModalityOverride], dict[str, str]]:
    """The user's overrides, the covered modalities (with what their weights need) and the others."""
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
    return given, covered, uncovered


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


def fusion_mode(
    layout: ReferenceLayout, hyper: Mapping[str, Any], report: ConversionReport
) -> tuple[str, int]:
    """The suite's fusion mode for the reference's, and the number of late-fusion blocks."""
    fusion = str(hyper.get("fusion_mode", hyper.get("multimodal", "")))
    reference_streams = list(layout.encoders)
    if not fusion:
        fusion = "shared" if reference_streams == ["shared"] else "group"
    if fusion == "group" and set(reference_streams) == set(layout.band_groups):
        fusion = "mod"  # every modality alone in its group: the suite's 'mod' mode is that
    if fusion not in FUSION_MODES:
        raise ConfigError(f"fusion_mode {fusion!r} of the checkpoint has no counterpart in the suite")
    inter_depth = layout.inter.depth if layout.inter is not None else 0
    if inter_depth and fusion in ("shared", "monotemp"):
        raise ConfigError(f"late-fusion blocks with the frame-wise fusion mode {fusion!r} are not supported")
    stored_inter = hyper.get("inter_depth")
    if stored_inter is not None and int(stored_inter) != inter_depth:
        report.notes.append(
            f"hyper-parameter inter_depth {stored_inter} but {inter_depth} late-fusion blocks stored"
        )
    return fusion, inter_depth


def encoder_config(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    covered: Mapping[str, ModalityOverride],
    fusion: str,
    inter_depth: int,
    options: ConversionOptions,
    report: ConversionReport,
) -> EncoderConfig:
    """The suite encoder of the reference's streams, with the reference's date code."""
    if not layout.encoders:
        raise ConfigError("no encoder.<group>.* tensors: the checkpoint holds no stream encoder")
    depths = {s.depth for s in layout.encoders.values()}
    if len(depths) != 1:
        raise ConfigError(
            f"stream encoders of different depths: { {k: s.depth for k, s in layout.encoders.items()} }"
        )
    first = next(iter(layout.encoders.values()))
    width = layout.width
    heads = encoder_heads(hyper, width, first.inner, options.num_heads, report)
    size_name = str(hyper.get("model_size", "medium"))
    try:
        config = EncoderConfig(
            modalities=tuple(covered),
            overrides={k: v for k, v in covered.items() if v != ModalityOverride()},
            size=size_name if size_name in SIZES else "medium",
            fusion=fusion,
            inter_depth=inter_depth,
            grid_size=options.grid_size or REFERENCE_GRID,
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
    if config.transformer.mlp_hidden != first.mlp_hidden:
        raise ConfigError(f"MLP hidden size {first.mlp_hidden} is not representable as width x ratio")
    report.notes.append(
        "date code as in the reference: day of year counted from 1 (day_of_year_origin=1) and the year "
        "offset rounded as its float32 arithmetic does (date_offset='float32')"
    )
    return config


def encoder_heads(
    hyper: Mapping[str, Any], width: int, inner: int, given: int | None, report: ConversionReport
) -> int:
    """Attention heads: given, else the reference size factory's (no tensor shape holds them)."""
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


def note_sizes(
    layout: ReferenceLayout,
    config: EncoderConfig,
    given: Mapping[str, ModalityOverride],
    report: ConversionReport,
    strict: bool,
) -> None:
    """Note the sizes assumed from the registry, and check them against the segmentation heads."""
    assumed = assumed_sizes(config, given)
    if assumed:
        report.notes.append(assumed)
    check_head_sizes(
        {name: head.out_channels for name, head in layout.heads.items()},
        config,
        given,
        report.notes,
        strict=strict,
    )


def map_encoder(
    layout: ReferenceLayout, config: EncoderConfig, mapper: KeyMapper, uncovered: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Patch embeddings, stream encoders and late fusion under ``encoder.``; returns the stream
    matching (reference -> suite) and the reference streams left out."""
    with torch.device("meta"):
        our_streams = MaestroEncoder(config, initialise=False).stream_names
    reference_streams = list(layout.encoders)
    stream_of, orphans = _match_streams(reference_streams, our_streams, uncovered)
    for mod in layout.band_groups:
        if mod in uncovered:
            mapper.skip_prefix(f"patch_embed.{mod}.", f"modality {mod} is not covered by the registry")
        else:
            mapper.embed(mod, f"encoder.patch_embed.{mod}.")
    for name in reference_streams:
        if name in orphans:
            mapper.skip_prefix(f"encoder.{name}.", f"stream encoder {name} of uncovered modalities")
        else:
            mapper.stack(f"encoder.{name}.", f"encoder.streams.{stream_of[name]}.")
    if layout.inter is not None:
        mapper.stack("encoder_inter.", "encoder.late_fusion.")
    return stream_of, orphans


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
