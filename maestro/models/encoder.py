"""The MAESTRO encoder: multimodal, multitemporal inputs -> per-modality token maps.

Data flow::

    inputs {mod: (B, T, C, H, W)} -> patch embedding per band group -> tokens {mod: (B, T, G, N, D)}
    + fixed position/date codes -> fusion plan: sequences per stream -> [drop masked tokens]
    -> stream encoders -> late-fusion blocks on all groups together (mod/group)
    -> token maps {mod: (B, T, G, h, w, D)}

Streams are the encoders of the fusion mode: ``shared`` (one), one per modality (``monotemp``,
``mod``) or one per fusion group (``group``). The encoder runs on any batch that holds exactly its
configured modalities; padded dates (``valid`` False) are computed but never attended to.

State-dict layout (what is published; pinned by ``tests/test_models_encoder.py``)::

    patch_embed.{modality}.groups.{band_group}.proj.{weight,bias}   Conv2d(k = s = patch size)
    patch_embed.{modality}.groups.{band_group}.norm.{weight,bias}   GroupNorm(1, width)
    streams.{stream}.blocks.{i}.norm1|attn.qkv|attn.proj|norm2|mlp.fc1|mlp.fc2 ...   timm ViT names
    streams.{stream}.norm.{weight,bias}                             final LayerNorm of the stream
    late_fusion.blocks.{i}. ...  late_fusion.norm.{weight,bias}     (mod/group with inter_depth > 0)

``{stream}`` is ``shared``, a modality key or a fusion-group name (``aerial``, ``dem``, ``s2``,
``s1`` on FLAIR-HUB). Position and date codes are fixed functions of the config and are not stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from maestro.errors import ConfigError
from maestro.hub.pretrained import HubModel
from maestro.hub.weights import Weights
from maestro.models.config import EncoderConfig, ModalitySpec
from maestro.models.embed import ModalityEmbed
from maestro.models.encodings import TokenEncoding
from maestro.models.fusion import (
    SequenceSpec,
    TokenLayout,
    group_tokens,
    plan_sequences,
    streams,
    ungroup_tokens,
)
from maestro.models.masking import gather_tokens, scatter_tokens, visible_indices
from maestro.models.registry import register_model_type
from maestro.models.transformer import Stack

Tensors = Mapping[str, Tensor]


def any_padding(valid: Tensors) -> bool:
    """Whether any date of any modality is padding: one host sync per forward, not one per modality."""
    return not bool(torch.stack([v.all() for v in valid.values()]).all())


def has_padding(valid: Tensors | None, padded: bool | None = None) -> bool:
    """Whether attention needs key masks: ``padded`` when the caller knows it (the data loader sees
    the masks on the host before they reach the device), no padding without ``valid``, else read
    from ``valid`` (a host sync, and a graph break under ``torch.compile``)."""
    if padded is not None:
        return padded
    return valid is not None and any_padding(valid)


def take_indices(depth: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's ``forward_intermediates`` convention: ``None`` every block, an int the last ``n``
    blocks, a sequence 0-based block indices (negative counts from the end)."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"cannot take the last {indices} blocks: the encoder has {depth} blocks")
        return list(range(depth - indices, depth))
    taken = []
    for index in indices:
        if not -depth <= index < depth:
            raise ValueError(f"block index {index} out of range: the encoder has blocks 0..{depth - 1}")
        taken.append(index % depth)
    return taken


@dataclass
class EncoderOutput:
    """Token maps ``(B, T, G, h, w, D)`` per modality, with what heads need to use them."""

    tokens: dict[str, Tensor]
    """Final encoder output (after the last LayerNorm)."""
    intermediates: list[dict[str, Tensor]]
    """Outputs of the requested blocks, in the order of the requested indices (blocks counted
    0..depth-1 over the whole encoder: stream blocks first, then late-fusion blocks). A block that
    ends a stack (the last stream block, the last block) is returned after that stack's final
    LayerNorm, so block ``depth - 1`` equals ``tokens``."""
    valid: dict[str, Tensor]
    """``(B, T)`` True on real dates; tokens of padded dates are placeholders to ignore."""
    mask: dict[str, Tensor] | None = None
    """``(B, T, G, h, w)`` True where a token was hidden from the encoder (its entries are zeros)
    or is padding; None when nothing was masked."""


@dataclass
class EncodedSequences:
    """Encoder sequences of one forward pass, with what is needed to put tokens back in place."""

    final: list[Tensor]
    layers: dict[int, list[Tensor]]
    """0-based block index -> sequences after that block."""
    keep: list[Tensor] | None
    """Visible token indices per sequence, None when nothing was masked."""


@register_model_type("maestro-encoder")
class MaestroEncoder(nn.Module, HubModel):
    """Patch embeddings, fixed codes, stream encoders and late-fusion blocks of MAESTRO."""

    def __init__(self, config: EncoderConfig, *, initialise: bool = True):
        """``initialise=False`` leaves initialisation to a wrapper that initialises the encoder
        together with its own layers in one pass (the MAE: same random stream as one model)."""
        super().__init__()
        self.config = config
        self.specs: dict[str, ModalitySpec] = dict(config.specs)
        self.layouts = {key: TokenLayout.of(spec) for key, spec in self.specs.items()}
        fusion_groups = {key: spec.fusion_group for key, spec in self.specs.items()}
        self.plan: tuple[SequenceSpec, ...] = plan_sequences(self.layouts, config.fusion, fusion_groups)
        self.stream_names = streams(config.fusion, fusion_groups)

        size = config.transformer
        self.width, self.depth = size.width, size.depth
        self.inter_depth = config.effective_inter_depth
        self.own_depth = size.depth - self.inter_depth
        rates = torch.linspace(0, config.drop_path, size.depth, device="cpu").tolist()

        self.patch_embed = nn.ModuleDict(
            {key: ModalityEmbed(spec, size.width) for key, spec in self.specs.items()}
        )
        self.encoding = TokenEncoding(
            size.width,
            config.grid_size,
            [spec.grid for spec in self.specs.values()],
            config.date_offset,
            config.day_of_year_origin,
        )
        self.streams = nn.ModuleDict(
            {
                name: Stack(
                    size.width, self.own_depth, size.num_heads, size.mlp_hidden, rates[: self.own_depth]
                )
                for name in self.stream_names
            }
        )
        self.late_fusion = (
            Stack(size.width, self.inter_depth, size.num_heads, size.mlp_hidden, rates[self.own_depth :])
            if self.inter_depth
            else None
        )
        if initialise:
            init_weights(self)

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def forward(self, inputs: Tensors, times: Tensors, valid: Tensors | None = None) -> EncoderOutput:
        """Final token maps of a model-sample batch (see :mod:`maestro.sample`), no intermediates."""
        return self.forward_intermediates(inputs, times, valid, indices=[])

    def forward_intermediates(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        indices: int | Sequence[int] | None = None,
        padded: bool | None = None,
    ) -> EncoderOutput:
        """Final and intermediate token maps; ``indices`` as in timm (0-based, negative allowed,
        an int ``n`` for the last ``n`` blocks, None for all). ``padded`` (see :func:`has_padding`)
        spares a host sync when the caller already knows whether any date is padding."""
        taken = take_indices(self.depth, indices)
        padded = has_padding(valid, padded)
        inputs, times, valid = self.prepare(inputs, times, valid)
        padding = self.padding(valid)
        encoded = self.encode_sequences(inputs, times, padding if padded else None, None, set(taken))
        return EncoderOutput(
            tokens=self.token_maps(encoded.final, None),
            intermediates=[self.token_maps(encoded.layers[k], None) for k in taken],
            valid=valid,
        )

    @property
    def num_tokens(self) -> dict[str, int]:
        """Tokens per sample and modality."""
        return {key: spec.num_tokens for key, spec in self.specs.items()}

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay beyond biases and norms (timm convention)."""
        return set()

    # ----------------------------------------------------------------------------------------
    # Steps (also used by the masked autoencoder)
    # ----------------------------------------------------------------------------------------

    def prepare(
        self, inputs: Tensors, times: Tensors, valid: Tensors | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Check shapes against the config; zero padded dates so they cannot carry NaN anywhere."""
        expected = set(self.specs)
        named = [("inputs", inputs), ("times", times)] + ([("valid", valid)] if valid is not None else [])
        for name, given in named:
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

    def padding(self, valid: Tensors) -> dict[str, Tensor]:
        """``(B, T)`` valid dates -> ``(B, T, G, N)`` True on padded tokens."""
        return {
            key: rearrange(~valid[key], "b t -> b t 1 1").expand(
                -1, -1, layout.num_groups, layout.num_patches
            )
            for key, layout in self.layouts.items()
        }

    def encode_sequences(
        self,
        inputs: Tensors,
        times: Tensors,
        padding: Tensors | None,
        mask: Tensors | None,
        layers: set[int],
        num_visible: Sequence[int] | None = None,
    ) -> EncodedSequences:
        """Embed, regroup, drop masked tokens, run stream encoders then the late-fusion stack.

        ``mask`` ``{mod: (B, T, G, N)}`` hides tokens from the encoder; every sample of a sequence
        must then keep the same number of tokens, ``num_visible[i]`` for sequence ``i`` of the plan.
        ``layers`` are 0-based block indices whose outputs are collected.
        """
        tokens = {
            key: self.encoding(self.patch_embed[key](inputs[key]), times[key], spec.grid)
            for key, spec in self.specs.items()
        }
        sequences = group_tokens(tokens, self.plan)
        key_valid: list[Tensor | None] = (
            [~p for p in group_tokens(padding, self.plan)] if padding is not None else [None] * len(sequences)
        )
        keep = None
        if mask is not None:
            if num_visible is None:
                raise ValueError("a token mask needs num_visible: the number of tokens kept per sequence")
            keep = []
            for index, token_mask in enumerate(group_tokens(mask, self.plan)):
                indices = visible_indices(token_mask, num_visible[index])
                keep.append(indices)
                sequences[index] = gather_tokens(sequences[index], indices)
                if key_valid[index] is not None:
                    key_valid[index] = gather_tokens(key_valid[index], indices)

        # Stacks count their blocks 1..depth; the API counts the whole encoder 0..depth-1.
        own_layers = {k + 1 for k in layers if k < self.own_depth}
        final, collected = [], {k: [] for k in layers}
        for spec, sequence, valid in zip(self.plan, sequences, key_valid, strict=True):
            out, blocks = self.streams[spec.stream](sequence, valid, own_layers)
            final.append(out)
            for k, value in blocks.items():
                collected[k - 1].append(value)

        if self.late_fusion is not None:
            lengths = [s.shape[1] for s in final]
            joint_valid = None
            if padding is not None:
                joint_valid = torch.cat([v for v in key_valid if v is not None], dim=1)
            inter_layers = {k - self.own_depth + 1 for k in layers if k >= self.own_depth}
            out, blocks = self.late_fusion(torch.cat(final, dim=1), joint_valid, inter_layers)
            final = list(out.split(lengths, dim=1))
            for k, value in blocks.items():
                collected[k - 1 + self.own_depth] = list(value.split(lengths, dim=1))
        return EncodedSequences(final=final, layers=collected, keep=keep)

    # ----------------------------------------------------------------------------------------
    # Reshaping helpers
    # ----------------------------------------------------------------------------------------

    def tokens(self, sequences: list[Tensor], keep: list[Tensor] | None) -> dict[str, Tensor]:
        """Visible-token sequences -> full per-modality ``(B, T, G, N, D)`` (zeros where masked)."""
        if keep is not None:
            sequences = [
                scatter_tokens(seq, indices, spec.length(self.layouts))
                for spec, seq, indices in zip(self.plan, sequences, keep, strict=True)
            ]
        return ungroup_tokens(sequences, self.plan, self.layouts)

    def token_maps(self, sequences: list[Tensor], keep: list[Tensor] | None) -> dict[str, Tensor]:
        """Sequences -> per-modality ``(B, T, G, h, w, D)`` maps."""
        return {key: self.to_maps(tokens, key) for key, tokens in self.tokens(sequences, keep).items()}

    def to_maps(self, tokens: Tensor, key: str) -> Tensor:
        """``(B, T, G, N, ...)`` -> ``(B, T, G, h, w, ...)``."""
        return rearrange(tokens, "b t g (h w) ... -> b t g h w ...", h=self.specs[key].grid)


def init_weights(module: nn.Module) -> None:
    """MAE/timm initialisation: truncated normal linears, xavier patch projections."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight.view(layer.weight.shape[0], -1))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def restrict(weights: Weights, modalities: tuple[str, ...]) -> Weights:
    """Encoder weights on a subset of their inputs: unused patch embeddings and streams dropped.

    An input the pretrained encoder never saw cannot be added here: it has no embedding.
    """
    config = weights.config
    unknown = [key for key in modalities if key not in config.modalities]
    if unknown:
        raise ConfigError(
            f"the pretrained encoder ({weights.source}) takes {list(config.modalities)}; it has no weights "
            f"for {unknown}. Fine-tune on a subset of its inputs or pretrain with them"
        )
    if tuple(modalities) == config.modalities:
        return weights
    subset = config.replace(
        modalities=tuple(modalities),
        overrides={key: value for key, value in config.overrides.items() if key in modalities},
    )
    with torch.device("meta"):
        keys = set(MaestroEncoder(subset, initialise=False).state_dict())
    state = {key: value for key, value in weights.state.items() if key in keys}
    return dataclasses.replace(
        weights, config=subset, state=state, note=weights.note + f", restricted to {list(modalities)}"
    )
