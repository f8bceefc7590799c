"""The pretraining decoder of a ``maestro-mae`` conversion: its size, the MAE config, its tensors.

Stream decoders and the encoder-to-decoder projections follow the encoder's stream matching; mask
tokens and pixel heads are per modality, and the pixel heads' rows are reordered to the suite's
(band, row, column) order (:func:`maestro.reference.keys.pixel_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from maestro.errors import ConfigError
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.reference.encoder import EncoderPlan
from maestro.reference.keys import PIXELS, ConversionReport, KeyMapper, pixel_rows
from maestro.reference.layout import ReferenceLayout, StackLayout
from maestro.reference.options import ask

REFERENCE_DECODER_HEAD_DIM = 32
"""Decoder head width of every reference size factory."""


def plan_decoder(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    encoder: EncoderPlan,
    mapper: KeyMapper,
    decoder_heads: int | None,
) -> MAEConfig:
    """The MAE config around ``encoder``, with the decoder's tensors mapped."""
    decoder, heads = decoder_size(layout, decoder_heads, mapper.report)
    config = mae_config(encoder.config, hyper, decoder, heads, mapper.report)
    map_stream_decoders(layout, encoder, mapper, decoder.width)
    for mod, groups in layout.band_groups.items():
        if mod in encoder.uncovered:
            for start in (f"mask_token.{mod}", f"embed_to_rec.{mod}."):
                mapper.skip_prefix(start, f"modality {mod} is not covered by the registry")
            continue
        map_mask_token(mapper, mod, len(groups), decoder.width)
        map_pixel_head(mapper, mod, groups, layout.patch_sizes[mod])
    return config


def decoder_size(
    layout: ReferenceLayout, decoder_heads: int | None, report: ConversionReport
) -> tuple[StackLayout, int]:
    """The stream decoders' common size and head count (given, else heads of the reference's width)."""
    if not layout.decoders:
        raise ConfigError("the checkpoint holds no decoder.<group> weights: convert it as a maestro-encoder")
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
    return decoder, decoder_heads


def mae_config(
    encoder: EncoderConfig,
    hyper: Mapping[str, Any],
    decoder: StackLayout,
    heads: int,
    report: ConversionReport,
) -> MAEConfig:
    """The MAE config: the decoder's size and the masking the checkpoint's hyper-parameters state."""
    mask = hyper.get("mask") if isinstance(hyper.get("mask"), Mapping) else {}
    if mask.get("mask_scale"):
        report.notes.append(
            f"mask_scale {mask['mask_scale']} has no counterpart; the suite masks a fixed ratio"
        )
    return MAEConfig(
        encoder=encoder,
        mask_ratio=float(mask.get("mask_ratio", 0.75)),
        p_drop_modality=float(mask.get("mask_mod") or 0.0),
        p_drop_date=float(mask.get("mask_dates") or 0.0),
        p_drop_location=float(mask.get("mask_loc") or 0.0),
        p_drop_band_group=float(mask.get("mask_bands") or 0.0),
        decoder_width=decoder.width,
        decoder_depth=decoder.depth,
        decoder_heads=heads,
        decoder_mlp_hidden=decoder.mlp_hidden,
    )


def map_stream_decoders(layout: ReferenceLayout, encoder: EncoderPlan, mapper: KeyMapper, width: int) -> None:
    """Each stream's decoder and encoder-to-decoder projection (identity when the reference has none)."""
    for name in layout.decoders:
        if name in encoder.orphans or name not in encoder.stream_of:
            mapper.skip_prefix(f"decoder.{name}.", f"stream decoder {name} of uncovered modalities")
            mapper.skip_prefix(
                f"enc_to_dec.{name}.", f"projection of the stream {name} of uncovered modalities"
            )
            continue
        ours = encoder.stream_of[name]
        mapper.stack(f"decoder.{name}.", f"decoders.{ours}.")
        if layout.has_enc_to_dec:
            mapper.put(f"enc_to_dec.{name}.weight", f"to_decoder.{ours}.weight")
            mapper.put(f"enc_to_dec.{name}.bias", f"to_decoder.{ours}.bias")
        else:
            like = mapper.state[f"decoder.{name}.norm.weight"]
            mapper.out[f"to_decoder.{ours}.weight"] = torch.eye(width, dtype=like.dtype, device=like.device)
            mapper.out[f"to_decoder.{ours}.bias"] = torch.zeros_like(like)
    if not layout.has_enc_to_dec:
        mapper.report.notes.append(
            "the reference has no encoder-to-decoder projection (same widths): identity written"
        )


def map_mask_token(mapper: KeyMapper, mod: str, groups: int, width: int) -> None:
    """A modality's mask token, (1, G, 1, 1, Dd) in the reference, (G, Dd) in the suite."""
    token = mapper.state.get(f"mask_token.{mod}")
    if token is None:
        raise ConfigError(f"{mapper.prefix}mask_token.{mod} is missing from the checkpoint")
    if token.numel() != groups * width:
        raise ConfigError(
            f"{mapper.prefix}mask_token.{mod}: shape {tuple(token.shape)} is not (1, {groups}, 1, 1, {width})"
        )
    mapper.put(f"mask_token.{mod}", f"mask_tokens.{mod}.token", token.reshape(groups, width))


def map_pixel_head(mapper: KeyMapper, mod: str, groups: list[int], patch: int) -> None:
    """A modality's reconstruction convs, one per band group, rows in the suite's order."""
    for key in [k for k in mapper.state if k.startswith(f"embed_to_rec.{mod}.")]:
        match = PIXELS.match(key[len(f"embed_to_rec.{mod}.") :])
        if match is None:
            continue
        group, _, kind = match.groups()
        channels = groups[int(group)]
        mapper.put(
            key, f"heads.{mod}.groups.{group}.{kind}", pixel_rows(mapper.state[key], channels, patch, key)
        )
