"""MAESTRO for semantic segmentation: the pretrained encoder, a decoder and a head (smp's order).

Data flow of :meth:`MaestroSegmenter.forward`::

    batch {mod: (B, T, C, H, W)} -> [fill missing modalities] -> [training: modality dropout]
    -> encoder (final tokens + the blocks the head reads) -> decoder -> head -> logits (B, K, H, W)
                                                          -> [aux heads, one per modality]

State-dict keys: ``encoder.*`` (the encoder's published layout, so pretrained weights load with
``segmenter.encoder.load_state_dict(...)``), ``decoder.*``, ``head.*`` and ``aux_heads.{modality}.*``.

Missing modalities. A modality absent from a batch is the limit case of padding: all its dates are
invalid. With ``allow_missing=True`` it is filled with zeros and ``valid`` False, the encoder never
attends to its tokens, and every date pooling ignores them (a modality without a valid date pools
to zeros), so the heads see exactly what modality dropout shows them in training. Training with
``modality_dropout > 0`` is what makes predictions robust to that. Without ``allow_missing`` a
missing modality is an error, because it is more often a data bug than a choice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TypedDict

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from torch import Tensor, nn

from maestro.hub.pretrained import HubModel
from maestro.models.config import ModalitySpec
from maestro.models.encoder import EncoderOutput, MaestroEncoder
from maestro.models.heads.aux import AuxHeads
from maestro.models.heads.pooling import AttentivePool
from maestro.models.registry import register_model_type
from maestro.models.segmenter_config import SegmenterConfig

Tensors = Mapping[str, Tensor]
log = logging.getLogger(__name__)


class SegmenterOutput(TypedDict, total=False):
    """What every segmenter's forward returns. Build it as a dict literal (``{"logits": ...}``),
    never by calling the class: dynamo cannot trace a TypedDict with optional keys and breaks the
    compiled graph there."""

    logits: Tensor
    """``(B, num_classes, label_size, label_size)``."""
    aux: dict[str, Tensor]
    """Per-modality logits of the auxiliary heads, same shape (only with ``aux_heads``)."""


def complete_batch(
    inputs: Tensors,
    times: Tensors,
    valid: Tensors | None,
    specs: Mapping[str, ModalitySpec],
    allow_missing: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Add the configured modalities a batch lacks as fully invalid (zeros, ``valid`` False)."""
    missing = [key for key in specs if key not in inputs]
    if missing and not allow_missing:
        raise ValueError(
            f"the batch lacks configured modalities {missing} (it holds {sorted(inputs)}); pass "
            f"allow_missing=True to predict without them (they then count as having no valid date)"
        )
    if not inputs:
        raise ValueError(f"the batch holds no modality at all; configured modalities are {list(specs)}")
    reference = next(iter(inputs.values()))
    batch, device = reference.shape[0], reference.device
    inputs, times = dict(inputs), dict(times)
    valid = (
        dict(valid)
        if valid is not None
        else {key: torch.ones(x.shape[:2], dtype=torch.bool, device=device) for key, x in inputs.items()}
    )
    for key in missing:
        spec = specs[key]
        dates = (batch, spec.num_dates)
        inputs[key] = reference.new_zeros(*dates, spec.num_bands, spec.image_size, spec.image_size)
        times[key] = reference.new_zeros(*dates, 3)
        valid[key] = torch.zeros(dates, dtype=torch.bool, device=device)
    return inputs, times, valid


def drop_modalities(valid: Tensors, p: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Modality dropout: per sample and modality, with probability ``p``, every date becomes invalid.

    A sample keeps at least one of the modalities it has (one chosen at random is spared when all
    were drawn). Marking dates invalid is enough: the encoder zeroes the inputs of invalid dates and
    never attends to their tokens, and the date pooling ignores them. ``generator`` (CPU or on the
    batch's device) makes the draw reproducible; None uses torch's global RNG.
    """
    keys = list(valid)
    present = torch.stack([valid[key].bool().any(dim=1) for key in keys], dim=1)  # (B, M)
    draw_device = generator.device if generator is not None else present.device
    draws = torch.rand(2, *present.shape, generator=generator, device=draw_device).to(present.device)
    drop = (draws[0] < p) & present
    left_none = present.any(dim=1) & ~(present & ~drop).any(dim=1)
    spared = F.one_hot(torch.where(present, draws[1], -1.0).argmax(dim=1), len(keys)).bool()
    drop &= ~(spared & left_none[:, None])
    return {key: valid[key].bool() & ~drop[:, index, None] for index, key in enumerate(keys)}


@register_model_type("maestro-segmenter")
class MaestroSegmenter(nn.Module, HubModel):
    """MAESTRO encoder + a registered head (:mod:`maestro.models.heads.registry`) + optional aux heads."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.encoder = MaestroEncoder(config.encoder)
        self.blocks: tuple[int, ...] = config.blocks
        parts = config.head_spec.build(config)
        self.decoder, self.head = parts.decoder, parts.head
        initialize_decoder(self.decoder)
        initialize_head(self.head)
        self.aux_heads: AuxHeads | None = None
        if config.aux_heads:
            self.aux_heads = AuxHeads(
                config.encoder.modalities,
                self.encoder.width,
                config.num_classes,
                config.label_size,
                config.date_pooling,
            )
            initialize_head(self.aux_heads)
        if config.freeze_encoder:
            self.encoder.requires_grad_(False).eval()
        log.debug("segmenter: head %r on encoder blocks %s", config.head, list(self.blocks) or "final")

    def train(self, mode: bool = True) -> MaestroSegmenter:
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode (no drop-path)."""
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def encode(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> EncoderOutput:
        """Final tokens and the blocks the head reads, after filling missing modalities and (in
        training) modality dropout. ``padded``: whether ``valid`` has any padded date, when the
        caller knows it on the host (spares a device sync)."""
        missing = any(key not in inputs for key in self.encoder.specs)
        inputs, times, valid = complete_batch(inputs, times, valid, self.encoder.specs, allow_missing)
        if missing:
            padded = True
        if self.training and self.config.modality_dropout > 0:
            valid = drop_modalities(valid, self.config.modality_dropout)
            padded = None  # what was dropped is only known on the device
        frozen = torch.no_grad() if self.config.freeze_encoder else contextlib.nullcontext()
        with frozen:
            return self.encoder.forward_intermediates(
                inputs, times, valid, indices=list(self.blocks), padded=padded
            )

    def forward_features(
        self, inputs: Tensors, times: Tensors, valid: Tensors | None = None, *, allow_missing: bool = False
    ) -> Tensor:
        """Decoder features before the head: the pooled ``(B, D, h, w)`` map for the ``maestro``
        head, UPerNet's ``(B, decoder_channels, 4h, 4w)`` for ``uperfuse``."""
        return self.decoder(self.encode(inputs, times, valid, allow_missing=allow_missing))

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> SegmenterOutput:
        """``{"logits": (B, K, H, W)}``, plus ``"aux": {modality: (B, K, H, W)}`` with aux heads.

        ``inputs``/``times``/``valid`` follow the model-sample contract (:mod:`maestro.sample`);
        ``allow_missing`` lets configured modalities be absent (module docstring); ``padded`` as in
        :meth:`encode`.
        """
        encoded = self.encode(inputs, times, valid, allow_missing=allow_missing, padded=padded)
        output: SegmenterOutput = {"logits": self.head(self.decoder(encoded))}
        if self.aux_heads is not None:
            output["aux"] = self.aux_heads(encoded)
        return output

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay: patch embedding, the encoder blocks, then everything
        above the encoder (decoder, heads) as one top layer."""
        return self.encoder.depth + 2

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (0: patch embedding, ``num_layers - 1``: decoder and heads)."""
        parts = name.split(".")
        if parts[0] != "encoder":
            return self.num_layers - 1
        if parts[1] == "patch_embed":
            return 0
        own = self.encoder.own_depth
        if parts[1] == "streams":
            return int(parts[4]) + 1 if parts[3] == "blocks" else own
        if parts[1] == "late_fusion":
            return own + int(parts[3]) + 1 if parts[2] == "blocks" else self.encoder.depth
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        """Full parameter names exempt from weight decay beyond biases and norms: learned queries."""
        names = {f"encoder.{name}" for name in self.encoder.no_weight_decay()}
        names |= {
            f"{name}.query" for name, module in self.named_modules() if isinstance(module, AttentivePool)
        }
        return names
