"""The MAESTRO masked autoencoder: a :class:`~maestro.models.encoder.MaestroEncoder` plus masking,
decoders, pixel heads and the reconstruction loss (the method is summarised in docs/method.md).

Data flow of :meth:`MaestroMAE.forward`::

    encoder embedding + codes -> masking (exact count per sequence, structured priors first)
    -> encoder on visible tokens only -> per-stream projection to the decoder width
    -> mask tokens + codes -> stream decoders -> pixel heads
    -> L1 against patch-normalised targets on masked pixels of valid dates.

Decoders mirror the encoder streams, as in the reference implementation, so in the default
``group`` mode there is one decoder per fusion group. State-dict keys: ``encoder.*`` (the encoder's
layout, see :mod:`maestro.models.encoder`), ``to_decoder.{stream}``, ``decoders.{stream}``,
``mask_tokens.{modality}.token``, ``heads.{modality}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from einops import rearrange
from torch import Tensor, nn

from maestro.hub.pretrained import HubModel
from maestro.models.config import MAEConfig, ModalitySpec
from maestro.models.embed import MaskToken
from maestro.models.encoder import (
    EncodedSequences,
    EncoderOutput,
    MaestroEncoder,
    has_padding,
    init_weights,
    take_indices,
)
from maestro.models.encodings import TokenEncoding
from maestro.models.fusion import group_tokens, ungroup_tokens
from maestro.models.loss import normalise_patches, reconstruction_loss
from maestro.models.masking import MaskPriors, Randomness, num_masked, sample_mask
from maestro.models.pixels import PixelHead, token_mask_to_pixels
from maestro.models.registry import register_model_type
from maestro.models.transformer import Stack

Tensors = Mapping[str, Tensor]


@register_model_type("maestro-mae")
class MaestroMAE(nn.Module, HubModel):
    """Multimodal, multitemporal, multispectral masked autoencoder."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        self.encoder = MaestroEncoder(config.encoder, initialise=False)
        self.specs: dict[str, ModalitySpec] = self.encoder.specs
        self.priors = (
            MaskPriors(
                config.p_drop_modality, config.p_drop_date, config.p_drop_location, config.p_drop_band_group
            )
            if config.encoder.sequence_fusion
            else None
        )
        decoder = config.decoder
        names = self.encoder.stream_names
        grids = [spec.grid for spec in self.specs.values()]
        self.to_decoder = nn.ModuleDict(
            {name: nn.Linear(self.encoder.width, decoder.width) for name in names}
        )
        self.decoder_encoding = TokenEncoding(
            decoder.width,
            config.encoder.grid_size,
            grids,
            config.encoder.date_offset,
            config.encoder.day_of_year_origin,
        )
        self.decoders = nn.ModuleDict(
            {
                name: Stack(decoder.width, decoder.depth, decoder.num_heads, decoder.mlp_hidden)
                for name in names
            }
        )
        self.mask_tokens = nn.ModuleDict(
            {key: MaskToken(spec.num_token_groups, decoder.width) for key, spec in self.specs.items()}
        )
        self.heads = nn.ModuleDict({key: PixelHead(spec, decoder.width) for key, spec in self.specs.items()})
        init_weights(self)  # encoder and decoders in one pass, in module order
        for mask_token in self.mask_tokens.values():
            nn.init.normal_(mask_token.token, std=0.02)

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        generator: Randomness = None,
        padded: bool | None = None,
    ) -> dict[str, object]:
        """Masked reconstruction of a model-sample batch (see :mod:`maestro.sample`).

        Returns ``loss`` (scalar), ``losses`` {mod: scalar}, ``counts`` {mod: pixels in the
        loss}, ``predictions`` and ``targets`` {mod: (B, T, C, H, W)} in target space (normalised
        unless ``normalize_targets`` is off), ``masks`` {mod: (B, T, G, h, w)} token masks (True:
        not seen by the encoder; padded dates always are) and ``pixel_masks`` {mod: (B, T, C, H, W)}:
        the pixels the loss uses (masked tokens of valid dates).
        ``generator`` makes the masks reproducible; ``padded`` as in
        :meth:`MaestroEncoder.forward_intermediates`.
        """
        encoder = self.encoder
        padded = has_padding(valid, padded)
        inputs, times, valid = encoder.prepare(inputs, times, valid)
        padding = encoder.padding(valid)
        mask = self.sample_mask(padding, generator)
        encoded = self._encode_masked(inputs, times, padding if padded else None, mask, set())
        # Padding that had to fill visible slots was invisible to attention all along; report it
        # (and decode it) as masked.
        hidden = {key: mask[key] | padding[key] for key in mask}
        predictions = self._decode(encoded, hidden, padding if padded else None, times)

        targets, pixel_masks = {}, {}
        for key, spec in self.specs.items():
            targets[key] = (
                normalise_patches(inputs[key], spec.patch_size, spec.norm_groups)
                if self.config.normalize_targets
                else inputs[key]
            )
            dates = rearrange(valid[key], "b t -> b t 1 1 1")
            pixel_masks[key] = token_mask_to_pixels(mask[key], spec) & dates
        loss, losses, counts = reconstruction_loss(predictions, targets, pixel_masks, self.loss_weights)
        return {
            "loss": loss,
            "losses": losses,
            "counts": counts,
            "predictions": predictions,
            "targets": targets,
            "masks": {key: encoder.to_maps(m, key) for key, m in hidden.items()},
            "pixel_masks": pixel_masks,
        }

    def encode(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        mask: bool = False,
        indices: int | Sequence[int] | None = (),
        generator: Randomness = None,
    ) -> EncoderOutput:
        """Encoder token maps, optionally of a masked input (what the decoder sees).

        Without ``mask`` this is ``self.encoder.forward_intermediates``; ``indices`` follow the
        same timm convention (0-based over the whole encoder, negative allowed).
        """
        if not mask:
            return self.encoder.forward_intermediates(inputs, times, valid, indices=indices)
        encoder = self.encoder
        taken = take_indices(encoder.depth, indices)
        padded = has_padding(valid)
        inputs, times, valid = encoder.prepare(inputs, times, valid)
        padding = encoder.padding(valid)
        token_mask = self.sample_mask(padding, generator)
        encoded = self._encode_masked(inputs, times, padding if padded else None, token_mask, set(taken))
        return EncoderOutput(
            tokens=encoder.token_maps(encoded.final, encoded.keep),
            intermediates=[encoder.token_maps(encoded.layers[k], encoded.keep) for k in taken],
            valid=valid,
            mask={key: encoder.to_maps(m | padding[key], key) for key, m in token_mask.items()},
        )

    def sample_mask(self, padding: Tensors, generator: Randomness = None) -> dict[str, Tensor]:
        """``{mod: (B, T, G, N)}`` True on tokens hidden from the encoder (exact count per sequence)."""
        encoder = self.encoder
        return sample_mask(
            encoder.plan, encoder.layouts, padding, self.config.mask_ratio, self.priors, generator
        )

    @property
    def num_tokens(self) -> dict[str, int]:
        """Tokens per sample and modality."""
        return self.encoder.num_tokens

    @property
    def loss_weights(self) -> dict[str, float]:
        """Each modality's weight in the total loss: its tokens per sample."""
        return {key: float(spec.num_tokens) for key, spec in self.specs.items()}

    def no_weight_decay(self) -> set[str]:
        """Learned mask tokens are exempt from weight decay (timm convention: full names)."""
        names = {f"encoder.{name}" for name in self.encoder.no_weight_decay()}
        return names | {f"mask_tokens.{key}.token" for key in self.mask_tokens}

    # ----------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------

    def _encode_masked(
        self, inputs: Tensors, times: Tensors, padding: Tensors | None, mask: Tensors, layers: set[int]
    ) -> EncodedSequences:
        encoder = self.encoder
        visible = [
            spec.length(encoder.layouts) - num_masked(spec.length(encoder.layouts), self.config.mask_ratio)
            for spec in encoder.plan
        ]
        return encoder.encode_sequences(inputs, times, padding, mask, layers, num_visible=visible)

    def _decode(
        self, encoded: EncodedSequences, mask: Tensors, padding: Tensors | None, times: Tensors
    ) -> dict[str, Tensor]:
        """Decoder tokens -> pixels, per modality (:meth:`decoded_tokens`)."""
        tokens = self.decoded_tokens(encoded, mask, padding, times)
        return {key: self.heads[key](tokens[key]) for key in self.specs}

    def decoded_tokens(
        self,
        encoded: EncodedSequences,
        mask: Tensors,
        padding: Tensors | None,
        times: Tensors,
        hints: Tensors | None = None,
    ) -> dict[str, Tensor]:
        """Project to decoder width, fill mask tokens, add codes, decode: ``{mod: (B, T, G, N, D)}``.

        Each hidden position gets its own modality's and band group's mask token, also where one
        sequence mixes several (``s1``); the reference can swap them (docs/method.md). ``hints``
        ``{mod: (B, T, G, N, D)}`` are added to a modality's filled tokens before the codes: cloud
        removal (:mod:`maestro.models.gapfill`) tells the decoder its prior there, and puts its own
        head on the returned tokens.
        """
        plan, layouts = self.encoder.plan, self.encoder.layouts
        projected = [
            self.to_decoder[spec.stream](sequence) for spec, sequence in zip(plan, encoded.final, strict=True)
        ]
        tokens = self.encoder.tokens(projected, encoded.keep)
        for key, spec in self.specs.items():
            filled = self.mask_tokens[key].fill(tokens[key], mask[key])
            if hints is not None and key in hints:
                filled = filled + hints[key].to(filled.dtype)
            tokens[key] = self.decoder_encoding(filled, times[key], spec.grid)
        sequences = group_tokens(tokens, plan)
        key_valid = (
            [~p for p in group_tokens(padding, plan)] if padding is not None else [None] * len(sequences)
        )
        decoded = [
            self.decoders[spec.stream](sequence, valid)[0]
            for spec, sequence, valid in zip(plan, sequences, key_valid, strict=True)
        ]
        return ungroup_tokens(decoded, plan, layouts)
