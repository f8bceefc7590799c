"""The MAESTRO masked autoencoder (DESIGN.md section 4).

Data flow of :meth:`MaestroMAE.forward`::

    inputs {mod: (B, T, C, H, W)} -> patch embedding per band group -> tokens {mod: (B, T, G, N, D)}
    + position/date codes -> masking (exact count per sequence, structured priors first)
    -> fusion plan: sequences per stream -> visible tokens only -> stream encoders
    -> late-fusion blocks on all groups together (mod/group) -> per-stream projection to the
    decoder width -> mask tokens + codes -> stream decoders -> pixel heads
    -> L1 against patch-normalised targets on masked pixels of valid dates.

Streams are the encoders of the fusion mode: ``shared`` (one), one per modality (``monotemp``,
``mod``) or one per fusion group (``group``). Decoders mirror the encoder streams, as in the
reference implementation, so in the default ``group`` mode there is one decoder per group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from maestro.models.config import MaestroConfig, ModalitySpec
from maestro.models.embed import MaskToken, ModalityEmbed
from maestro.models.encodings import TokenEncoding
from maestro.models.fusion import (
    SequenceSpec,
    TokenLayout,
    group_tokens,
    plan_sequences,
    streams,
    ungroup_tokens,
)
from maestro.models.loss import normalise_patches, reconstruction_loss
from maestro.models.masking import (
    MaskPriors,
    gather_tokens,
    num_masked,
    sample_mask,
    scatter_tokens,
    visible_indices,
)
from maestro.models.pixels import PixelHead, token_mask_to_pixels
from maestro.models.transformer import Stack

Tensors = Mapping[str, Tensor]


def _any_padding(valid: Tensors) -> bool:
    """Whether any date of any modality is padding: one host sync per forward, not one per modality."""
    return not bool(torch.stack([v.all() for v in valid.values()]).all())


@dataclass
class EncoderOutput:
    """What :meth:`MaestroMAE.encode` returns; token maps are ``(B, T, G, h, w, D)`` per modality."""

    tokens: dict[str, Tensor]
    """Final encoder output (after the last LayerNorm)."""
    layers: dict[int, dict[str, Tensor]]
    """Outputs of the requested blocks, counted 1..depth over the whole encoder incl. late fusion.
    A block that ends a stack (the last stream block, the last block) is returned after that
    stack's final LayerNorm, so ``layers[depth]`` equals ``tokens``."""
    mask: dict[str, Tensor] | None
    """``(B, T, G, h, w)`` True where a token was masked (entries are zeros) or is padding; None
    when encoding without masking."""


@dataclass
class _Sequences:
    """Encoder sequences of one forward pass, with what is needed to put tokens back in place."""

    final: list[Tensor]
    layers: dict[int, list[Tensor]]
    keep: list[Tensor] | None
    """Visible token indices per sequence, None when nothing was masked."""


class MaestroMAE(nn.Module):
    """Multimodal, multitemporal, multispectral masked autoencoder."""

    def __init__(self, config: MaestroConfig):
        super().__init__()
        self.config = config
        self.specs: dict[str, ModalitySpec] = dict(config.specs)
        self.layouts = {key: TokenLayout.of(spec) for key, spec in self.specs.items()}
        fusion_groups = {key: spec.fusion_group for key, spec in self.specs.items()}
        self.plan: tuple[SequenceSpec, ...] = plan_sequences(self.layouts, config.fusion, fusion_groups)
        self.priors = (
            MaskPriors(
                config.p_drop_modality, config.p_drop_date, config.p_drop_location, config.p_drop_band_group
            )
            if config.sequence_fusion
            else None
        )

        encoder, decoder = config.encoder, config.decoder
        self.width, self.depth = encoder.width, encoder.depth
        self.inter_depth = config.effective_inter_depth
        self.own_depth = encoder.depth - self.inter_depth
        grids = [spec.grid for spec in self.specs.values()]
        rates = torch.linspace(0, config.drop_path, encoder.depth).tolist()
        names = streams(config.fusion, fusion_groups)

        self.embed = nn.ModuleDict(
            {key: ModalityEmbed(spec, encoder.width) for key, spec in self.specs.items()}
        )
        self.encoding = TokenEncoding(encoder.width, config.grid_size, grids)
        self.encoders = nn.ModuleDict(
            {
                name: Stack(
                    encoder.width,
                    self.own_depth,
                    encoder.num_heads,
                    encoder.mlp_hidden,
                    rates[: self.own_depth],
                )
                for name in names
            }
        )
        self.inter = (
            Stack(
                encoder.width,
                self.inter_depth,
                encoder.num_heads,
                encoder.mlp_hidden,
                rates[self.own_depth :],
            )
            if self.inter_depth
            else None
        )
        self.to_decoder = nn.ModuleDict({name: nn.Linear(encoder.width, decoder.width) for name in names})
        self.decoder_encoding = TokenEncoding(decoder.width, config.grid_size, grids)
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
        self._init_weights()

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, object]:
        """Masked reconstruction of a model-sample batch (see :mod:`maestro.sample`).

        Returns ``loss`` (scalar), ``losses`` {mod: scalar}, ``predictions`` and ``targets``
        {mod: (B, T, C, H, W)} in normalised target space, ``masks`` {mod: (B, T, G, h, w)} token
        masks (True: not seen by the encoder; padded dates always are) and ``pixel_masks``
        {mod: (B, T, C, H, W)}: the pixels the loss uses (masked tokens of valid dates).
        ``generator`` makes the masks reproducible.
        """
        inputs, times, valid = self._prepare(inputs, times, valid)
        padding = self._padding(valid)
        has_padding = _any_padding(valid)
        mask = sample_mask(self.plan, self.layouts, padding, self.config.mask_ratio, self.priors, generator)
        encoded = self._encode_sequences(inputs, times, padding if has_padding else None, mask, ())
        # Padding that had to fill visible slots was invisible to attention all along; report it
        # (and decode it) as masked.
        hidden = {key: mask[key] | padding[key] for key in mask}
        predictions = self._decode(encoded, hidden, padding if has_padding else None, times)

        targets, pixel_masks = {}, {}
        for key, spec in self.specs.items():
            targets[key] = normalise_patches(inputs[key], spec.patch_size, spec.norm_groups)
            dates = rearrange(valid[key], "b t -> b t 1 1 1")
            pixel_masks[key] = token_mask_to_pixels(mask[key], spec) & dates
        weights = {key: float(spec.num_tokens) for key, spec in self.specs.items()}
        loss, losses = reconstruction_loss(predictions, targets, pixel_masks, weights)
        return {
            "loss": loss,
            "losses": losses,
            "predictions": predictions,
            "targets": targets,
            "masks": {key: self._to_maps(m, key) for key, m in hidden.items()},
            "pixel_masks": pixel_masks,
        }

    def encode(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        mask: bool = False,
        return_layers: Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """Encoder features for downstream heads, per modality ``(B, T, G, h, w, D)``.

        ``return_layers`` are block indices 1..depth over the whole encoder (stream blocks first,
        then late-fusion blocks); ``depth`` itself is the final, normed output. Tokens of padded
        dates are computed but never attended to; heads should use ``valid`` to ignore them.
        """
        layers = tuple(sorted(set(return_layers or ())))
        bad = [k for k in layers if not 1 <= k <= self.depth]
        if bad:
            raise ValueError(f"return_layers {bad} out of range: the encoder has blocks 1..{self.depth}")
        inputs, times, valid = self._prepare(inputs, times, valid)
        padding = self._padding(valid)
        has_padding = _any_padding(valid)
        token_mask = (
            sample_mask(self.plan, self.layouts, padding, self.config.mask_ratio, self.priors, generator)
            if mask
            else None
        )
        encoded = self._encode_sequences(inputs, times, padding if has_padding else None, token_mask, layers)
        return EncoderOutput(
            tokens=self._maps(encoded.final, encoded.keep),
            layers={k: self._maps(seqs, encoded.keep) for k, seqs in encoded.layers.items()},
            mask=(
                {key: self._to_maps(m | padding[key], key) for key, m in token_mask.items()}
                if token_mask is not None
                else None
            ),
        )

    @property
    def num_tokens(self) -> dict[str, int]:
        """Tokens per sample and modality."""
        return {key: spec.num_tokens for key, spec in self.specs.items()}

    # ----------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------

    def _prepare(
        self, inputs: Tensors, times: Tensors, valid: Tensors | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Check shapes against the config; zero padded dates so they cannot carry NaN anywhere."""
        expected = set(self.specs)
        for name, given in (("inputs", inputs), ("times", times)) + (
            (("valid", valid),) if valid is not None else ()
        ):
            if set(given) != expected:
                missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
                raise ValueError(
                    f"{name} must hold exactly the configured modalities {list(self.specs)}; "
                    f"missing {missing}, unexpected {extra}"
                )
        batch = next(iter(inputs.values())).shape[0]
        out_inputs, out_times, out_valid = {}, {}, {}
        for key, spec in self.specs.items():
            shape = (batch, spec.num_dates, spec.num_bands, spec.image_size, spec.image_size)
            if tuple(inputs[key].shape) != shape:
                raise ValueError(
                    f"inputs[{key!r}] has shape {tuple(inputs[key].shape)}, expected (B, T, C, H, W) = {shape} "
                    f"(num_dates {spec.num_dates}, bands {list(spec.bands)}, image size {spec.image_size})"
                )
            if tuple(times[key].shape) != (batch, spec.num_dates, 3):
                raise ValueError(
                    f"times[{key!r}] has shape {tuple(times[key].shape)}, expected {(batch, spec.num_dates, 3)}"
                )
            if valid is None:
                is_valid = torch.ones(batch, spec.num_dates, dtype=torch.bool, device=inputs[key].device)
            else:
                is_valid = valid[key].bool()
                if tuple(is_valid.shape) != (batch, spec.num_dates):
                    raise ValueError(
                        f"valid[{key!r}] has shape {tuple(is_valid.shape)}, expected {(batch, spec.num_dates)}"
                    )
            out_inputs[key] = torch.where(rearrange(is_valid, "b t -> b t 1 1 1"), inputs[key], 0.0)
            out_times[key] = torch.where(is_valid[..., None], times[key], 0.0)
            out_valid[key] = is_valid
        return out_inputs, out_times, out_valid

    def _padding(self, valid: Tensors) -> dict[str, Tensor]:
        """``(B, T)`` valid dates -> ``(B, T, G, N)`` True on padded tokens."""
        return {
            key: rearrange(~valid[key], "b t -> b t 1 1").expand(
                -1, -1, layout.num_groups, layout.num_patches
            )
            for key, layout in self.layouts.items()
        }

    def _encode_sequences(
        self,
        inputs: Tensors,
        times: Tensors,
        padding: Tensors | None,
        mask: Tensors | None,
        layers: tuple[int, ...],
    ) -> _Sequences:
        """Embed, regroup, drop masked tokens, run stream encoders then the late-fusion stack."""
        tokens = {
            key: self.encoding(self.embed[key](inputs[key]), times[key], spec.grid)
            for key, spec in self.specs.items()
        }
        sequences = group_tokens(tokens, self.plan)
        key_valid: list[Tensor | None] = (
            [~p for p in group_tokens(padding, self.plan)] if padding is not None else [None] * len(sequences)
        )
        keep = None
        if mask is not None:
            keep = []
            for index, (spec, token_mask) in enumerate(
                zip(self.plan, group_tokens(mask, self.plan), strict=True)
            ):
                length = spec.length(self.layouts)
                indices = visible_indices(token_mask, length - num_masked(length, self.config.mask_ratio))
                keep.append(indices)
                sequences[index] = gather_tokens(sequences[index], indices)
                if key_valid[index] is not None:
                    key_valid[index] = gather_tokens(key_valid[index], indices)

        own_layers = {k for k in layers if k <= self.own_depth}
        final, collected = [], {k: [] for k in layers}
        for spec, sequence, valid in zip(self.plan, sequences, key_valid, strict=True):
            out, blocks = self.encoders[spec.stream](sequence, valid, own_layers)
            final.append(out)
            for k, value in blocks.items():
                collected[k].append(value)

        if self.inter is not None:
            lengths = [s.shape[1] for s in final]
            joint_valid = None
            if padding is not None:
                joint_valid = torch.cat([v for v in key_valid if v is not None], dim=1)
            inter_layers = {k - self.own_depth for k in layers if k > self.own_depth}
            out, blocks = self.inter(torch.cat(final, dim=1), joint_valid, inter_layers)
            final = list(out.split(lengths, dim=1))
            for k, value in blocks.items():
                collected[k + self.own_depth] = list(value.split(lengths, dim=1))
        return _Sequences(final=final, layers=collected, keep=keep)

    def _decode(
        self, encoded: _Sequences, mask: Tensors, padding: Tensors | None, times: Tensors
    ) -> dict[str, Tensor]:
        """Project to decoder width, fill mask tokens, add codes, decode, predict pixels."""
        projected = [
            self.to_decoder[spec.stream](sequence)
            for spec, sequence in zip(self.plan, encoded.final, strict=True)
        ]
        tokens = self._tokens(projected, encoded.keep)
        for key, spec in self.specs.items():
            filled = self.mask_tokens[key].fill(tokens[key], mask[key])
            tokens[key] = self.decoder_encoding(filled, times[key], spec.grid)
        sequences = group_tokens(tokens, self.plan)
        key_valid = (
            [~p for p in group_tokens(padding, self.plan)] if padding is not None else [None] * len(sequences)
        )
        decoded = [
            self.decoders[spec.stream](sequence, valid)[0]
            for spec, sequence, valid in zip(self.plan, sequences, key_valid, strict=True)
        ]
        tokens = ungroup_tokens(decoded, self.plan, self.layouts)
        return {key: self.heads[key](tokens[key]) for key in self.specs}

    # ----------------------------------------------------------------------------------------
    # Reshaping helpers
    # ----------------------------------------------------------------------------------------

    def _tokens(self, sequences: list[Tensor], keep: list[Tensor] | None) -> dict[str, Tensor]:
        """Visible-token sequences -> full per-modality ``(B, T, G, N, D)`` (zeros where masked)."""
        if keep is not None:
            sequences = [
                scatter_tokens(seq, indices, spec.length(self.layouts))
                for spec, seq, indices in zip(self.plan, sequences, keep, strict=True)
            ]
        return ungroup_tokens(sequences, self.plan, self.layouts)

    def _maps(self, sequences: list[Tensor], keep: list[Tensor] | None) -> dict[str, Tensor]:
        return {key: self._to_maps(tokens, key) for key, tokens in self._tokens(sequences, keep).items()}

    def _to_maps(self, tokens: Tensor, key: str) -> Tensor:
        """``(B, T, G, N, ...)`` -> ``(B, T, G, h, w, ...)``."""
        return rearrange(tokens, "b t g (h w) ... -> b t g h w ...", h=self.specs[key].grid)

    def _init_weights(self) -> None:
        """MAE/timm initialisation: truncated normal linears, xavier patch projections."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for mask_token in self.mask_tokens.values():
            nn.init.normal_(mask_token.token, std=0.02)
