"""From a reference MAESTRO state dict to this suite's config and weights, in named steps.

1. :func:`select_weights`: the EMA or the trained copy, without its prefix;
2. :func:`~maestro.reference.layout.read_layout`: the architecture its keys and shapes describe;
3. :func:`~maestro.reference.encoder.plan_encoder`: modalities, fusion, size and the encoder's
   tensors, which every target holds;
4. the target's own parts (:data:`TARGETS`): the pretraining decoder
   (:mod:`maestro.reference.decoder`) or a segmentation head (:mod:`maestro.reference.head`); the
   parts a target does not hold are reported as left out;
5. :func:`finish`: every source tensor is used or reported, and the weights are checked against the
   suite network's shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from maestro.errors import ConfigError
from maestro.models.encoder import MaestroEncoder
from maestro.models.mae import MaestroMAE
from maestro.models.segmenter import MaestroSegmenter
from maestro.reference.decoder import plan_decoder
from maestro.reference.encoder import EncoderPlan, plan_encoder
from maestro.reference.head import plan_head
from maestro.reference.keys import ConversionReport, KeyMapper
from maestro.reference.layout import ReferenceLayout, read_layout
from maestro.reference.options import DEFAULT_OPTIONS, ConversionOptions, TargetType, Weights

log = logging.getLogger(__name__)

PREFIXES = {"ema": "ema_model.", "model": "model."}
DECODER_PARTS = ("enc_to_dec.", "decoder.", "mask_token.", "embed_to_rec.")


@dataclass
class Conversion:
    """A converted model: what to write into a model folder."""

    model_type: TargetType
    config: Any
    """EncoderConfig, MAEConfig or SegmenterConfig."""
    state: dict[str, Tensor]
    report: ConversionReport
    task: dict[str, Any] | None = None


Parts = Callable[
    [ReferenceLayout, Mapping[str, Any], EncoderPlan, KeyMapper, ConversionOptions],
    tuple[Any, dict[str, Any] | None],
]
"""Converts what a target holds beyond the encoder; returns its config and task."""


@dataclass(frozen=True)
class Target:
    """What one model type takes from a reference checkpoint."""

    parts: Parts
    network: Callable[[Any], nn.Module]
    """The suite network of a config, whose shapes the converted weights must fit."""
    bare_encoder: bool = False
    """The model is the encoder itself: its keys have no ``encoder.`` prefix."""
    has_head: bool = False
    """A segmentation head is converted: image sizes it contradicts are refused, not warned about."""


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
    hyper = dict(hyper_parameters or {})
    target = TARGETS.get(options.model_type)
    if target is None:
        raise ConfigError(
            f"model_type {options.model_type!r} is not maestro-encoder, maestro-mae or maestro-segmenter"
        )
    prefix, own, report = select_weights(state, options.weights)
    layout = read_layout(own)
    mapper = KeyMapper(own, prefix, report, {})
    encoder = plan_encoder(layout, hyper, options, mapper, strict_sizes=target.has_head)
    config, task = target.parts(layout, hyper, encoder, mapper, options)
    return finish(options.model_type, target, config, task, mapper)


def select_weights(
    state: Mapping[str, Tensor], weights: Weights
) -> tuple[str, dict[str, Tensor], ConversionReport]:
    """The prefix of the copy to convert, its tensors without it, and a report that names the
    other copy's tensors as left out."""
    prefix = _choose_prefix(state, weights)
    report = ConversionReport(prefix=prefix)
    own: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            own[key[len(prefix) :]] = value
        else:
            other = "trained" if weights == "ema" else "EMA"
            report.skipped[key] = f"the {other} copy of the weights (weights={weights!r} was asked for)"
    return prefix, own, report


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


# --------------------------------------------------------------------------------------------
# Targets: what each model type holds beyond the encoder
# --------------------------------------------------------------------------------------------


def _skip_decoder(mapper: KeyMapper, model_type: str) -> None:
    for part in DECODER_PARTS:
        mapper.skip_prefix(part, f"pretraining decoder ({part[:-1]}), not part of a {model_type}")


def _skip_heads(mapper: KeyMapper, model_type: str) -> None:
    mapper.skip_prefix("heads.", f"segmentation/classification head, not part of a {model_type}")


def _encoder_parts(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    encoder: EncoderPlan,
    mapper: KeyMapper,
    options: ConversionOptions,
) -> tuple[Any, None]:
    _skip_decoder(mapper, options.model_type)
    _skip_heads(mapper, options.model_type)
    return encoder.config, None


def _mae_parts(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    encoder: EncoderPlan,
    mapper: KeyMapper,
    options: ConversionOptions,
) -> tuple[Any, None]:
    config = plan_decoder(layout, hyper, encoder, mapper, options.decoder_heads)
    _skip_heads(mapper, options.model_type)
    return config, None


def _segmenter_parts(
    layout: ReferenceLayout,
    hyper: Mapping[str, Any],
    encoder: EncoderPlan,
    mapper: KeyMapper,
    options: ConversionOptions,
) -> tuple[Any, dict[str, Any] | None]:
    _skip_decoder(mapper, options.model_type)
    return plan_head(layout, encoder.config, mapper, options.target, options.num_classes)


def _bare_encoder(config: Any) -> nn.Module:
    return MaestroEncoder(config, initialise=False)


TARGETS: dict[str, Target] = {
    "maestro-mae": Target(_mae_parts, MaestroMAE),
    "maestro-encoder": Target(_encoder_parts, _bare_encoder, bare_encoder=True),
    "maestro-segmenter": Target(_segmenter_parts, MaestroSegmenter, has_head=True),
}
"""Every :data:`~maestro.reference.options.TargetType`, by name."""


# --------------------------------------------------------------------------------------------
# Finish: nothing left unaccounted for, shapes checked
# --------------------------------------------------------------------------------------------


def finish(
    model_type: TargetType, target: Target, config: Any, task: dict[str, Any] | None, mapper: KeyMapper
) -> Conversion:
    """Report the tensors no step took, drop the ``encoder.`` prefix of a bare encoder, check shapes."""
    mapper.skip_rest("not a part of the reference MAE this converter knows")
    report, state = mapper.report, mapper.out
    if target.bare_encoder:
        state = {key.removeprefix("encoder."): value for key, value in state.items()}
        report.used = {
            key: [t.removeprefix("encoder.") for t in targets] for key, targets in report.used.items()
        }
    check_shapes(model_type, target, config, state, report)
    return Conversion(model_type, config, state, report, task)


def check_shapes(
    model_type: TargetType, target: Target, config: Any, state: Mapping[str, Tensor], report: ConversionReport
) -> None:
    """Every converted tensor fits the suite model, and the model gets every tensor it has."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in target.network(config).state_dict().items()}
    sources = {ours: source for source, targets in report.used.items() for ours in targets}
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
