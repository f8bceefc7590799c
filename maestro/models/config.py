"""MAESTRO model configurations: the encoder, and the masked autoencoder that wraps it for pretraining.

A config that cannot work (unknown modality, patch size that does not tile the image, token grid
that does not tile the position grid, ...) raises :class:`~maestro.errors.ConfigError` at
construction, long before the first batch. Per-modality facts come from the registry
(:mod:`maestro.modalities`); ``overrides`` changes them per modality without touching the registry.
The resolved per-modality view that models use is :attr:`EncoderConfig.specs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.errors import ConfigError
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, ModalityOverride

FusionMode = Literal["shared", "monotemp", "mod", "group"]
SizeName = Literal["tiny", "small", "medium", "base", "large"]

FUSION_MODES: tuple[str, ...] = ("shared", "monotemp", "mod", "group")
DATE_CHANNELS = 8
"""Last channels of every token carry the date code (4 x year offset, doy sin/cos, hour sin/cos)."""
HEAD_DIM = 64


@dataclass(frozen=True)
class TransformerSize:
    """Width, depth, heads and MLP hidden size of one transformer stack."""

    width: int
    depth: int
    num_heads: int
    mlp_hidden: int


@dataclass(frozen=True)
class SizePreset:
    """One row of the size table in docs/method.md (head dim 64 everywhere)."""

    width: int
    depth: int
    num_heads: int
    mlp_ratio: float
    decoder_depth: int


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(192, 12, 3, 2.0, 1),
    "small": SizePreset(384, 12, 6, 2.0, 2),
    "medium": SizePreset(768, 12, 12, 4.0, 3),
    "base": SizePreset(768, 12, 12, 4.0, 3),
    "large": SizePreset(1024, 24, 16, 4.0, 4),
}


@dataclass(frozen=True)
class ModalitySpec:
    """Resolved, validated facts about one input modality, as the model uses them."""

    key: str
    bands: tuple[str, ...]
    patch_size: int
    image_size: int
    num_dates: int
    token_groups: tuple[tuple[int, ...], ...]
    """Band indices (into ``bands``) of each token band group."""
    norm_groups: tuple[tuple[int, ...], ...]
    """Band indices of each target-normalisation group (registry ``norm_groups``)."""
    fusion_group: str

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def grid(self) -> int:
        """Token grid side: tokens per row (and per column)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_token_groups(self) -> int:
        return len(self.token_groups)

    @property
    def num_tokens(self) -> int:
        """Tokens per sample: dates x band groups x patches."""
        return self.num_dates * self.num_token_groups * self.num_patches


@dataclass(frozen=True)
class EncoderConfig(ConfigMixin):
    """Everything that defines a MAESTRO encoder: inputs, tokenizer, fusion mode and transformer.

    This is what a published or fine-tuned model carries (``config.json``); masking and decoder
    settings belong to :class:`MAEConfig`, which wraps it for pretraining. Immutable.
    """

    modalities: tuple[str, ...] = DEFAULT_INPUTS
    """Input modality keys (registry keys of kind ``image``)."""
    overrides: dict[str, ModalityOverride] = field(default_factory=dict)
    size: SizeName = "medium"
    fusion: FusionMode = "group"
    inter_depth: int = 3
    """Last encoder blocks run on all groups together (``mod``/``group`` only; ignored otherwise)."""
    grid_size: int = 160
    """Side of the common fine grid of the position code; every token grid must divide it."""
    drop_path: float = 0.0
    width: int | None = None
    """Encoder width; ``None`` takes it from ``size`` (same for the fields below)."""
    depth: int | None = None
    num_heads: int | None = None
    """Default: width / 64 (head dim 64)."""
    mlp_ratio: float | None = None
    date_offset: Literal["exact", "float32"] = "exact"
    """Year offset of the date code: ``exact`` takes ``times`` as given; ``float32`` rounds it the
    way the reference implementation computes it, ``(year + doy / 365.25) - (year_ref + doy_ref /
    365.25)`` in float32 (up to about 1e-4 year), so that models converted from it reproduce its
    outputs to float32 precision. Assumes whole-day dates, as the data pipeline produces them."""
    day_of_year_origin: int = 0
    """Day number the date code gives to 1 January. The suite's ``times`` count from 0; the
    reference implementation counts from 1, so models converted from it use 1."""

    def __post_init__(self) -> None:
        # Accept YAML-ish inputs (lists, plain dicts) but store immutable-looking values.
        object.__setattr__(self, "modalities", tuple(self.modalities))
        overrides = {
            key: config_io.nested(ModalityOverride, value, f"overrides.{key}")
            for key, value in dict(self.overrides).items()
        }
        object.__setattr__(self, "overrides", overrides)
        self._validate()
        _ = self.specs  # resolves and validates every modality now, not at the first forward

    # ----------------------------------------------------------------------------------------
    # Resolved views
    # ----------------------------------------------------------------------------------------

    @property
    def transformer(self) -> TransformerSize:
        """Width, depth, heads and MLP size of the encoder, with ``size`` filling the gaps."""
        preset = SIZES[self.size]
        width = self.width if self.width is not None else preset.width
        depth = self.depth if self.depth is not None else preset.depth
        if self.num_heads is not None:
            heads = self.num_heads
        elif self.width is None:
            heads = preset.num_heads
        else:
            heads = max(width // HEAD_DIM, 1)
        ratio = self.mlp_ratio if self.mlp_ratio is not None else preset.mlp_ratio
        return TransformerSize(width, depth, heads, int(round(width * ratio)))

    @property
    def sequence_fusion(self) -> bool:
        """True for ``mod``/``group``: whole time series form one sequence and late fusion applies."""
        return self.fusion in ("mod", "group")

    @property
    def effective_inter_depth(self) -> int:
        """Blocks run on all groups together (0 for the frame-wise modes)."""
        return self.inter_depth if self.sequence_fusion else 0

    @cached_property
    def specs(self) -> dict[str, ModalitySpec]:
        """Resolved per-modality facts, in ``modalities`` order."""
        return {key: self._resolve(key) for key in self.modalities}

    @property
    def num_tokens(self) -> int:
        """Tokens per sample over all modalities (1880 for the FLAIR-HUB default)."""
        return sum(spec.num_tokens for spec in self.specs.values())

    # ----------------------------------------------------------------------------------------
    # Validation
    # ----------------------------------------------------------------------------------------

    def _validate(self) -> None:
        if not self.modalities:
            raise ConfigError("modalities: at least one input modality is required")
        duplicates = sorted({k for k in self.modalities if self.modalities.count(k) > 1})
        if duplicates:
            raise ConfigError(f"modalities: listed twice: {duplicates}")
        inputs = sorted(k for k, m in MODALITIES.items() if m.is_input)
        for key in self.modalities:
            if key not in MODALITIES:
                raise ConfigError(f"modalities: unknown modality {key!r}; input modalities are {inputs}")
            if not MODALITIES[key].is_input:
                raise ConfigError(
                    f"modalities: {key!r} is a {MODALITIES[key].kind}, not a network input; "
                    f"input modalities are {inputs}"
                )
        stray = sorted(set(self.overrides) - set(self.modalities))
        if stray:
            raise ConfigError(f"overrides: {stray} are not in modalities {list(self.modalities)}")
        if self.size not in SIZES:
            raise ConfigError(f"size: {self.size!r} is not one of {sorted(SIZES)}")
        if self.fusion not in FUSION_MODES:
            raise ConfigError(
                f"fusion: unknown fusion mode {self.fusion!r}; expected one of {list(FUSION_MODES)}"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path: {self.drop_path} must be in [0, 1)")
        if self.grid_size < 1:
            raise ConfigError(f"grid_size: {self.grid_size} must be positive")
        if self.date_offset not in ("exact", "float32"):
            raise ConfigError(f"date_offset: {self.date_offset!r} is not one of ['exact', 'float32']")
        if self.day_of_year_origin not in (0, 1):
            raise ConfigError(f"day_of_year_origin: {self.day_of_year_origin!r} must be 0 or 1")
        validate_size("encoder", self.transformer)
        depth = self.transformer.depth
        if not 0 <= self.inter_depth < depth:
            raise ConfigError(
                f"inter_depth: {self.inter_depth} must be in [0, depth) = [0, {depth}); the late-fusion "
                f"blocks are the last inter_depth of the {depth} encoder blocks"
            )

    def _resolve(self, key: str) -> ModalitySpec:
        entry = MODALITIES[key]
        override = self.overrides.get(key, ModalityOverride())
        where = f"modality {key!r}"

        bands = tuple(override.bands) if override.bands is not None else entry.input_bands
        if not bands:
            raise ConfigError(f"{where}: no bands selected")
        unknown = [b for b in bands if b not in entry.bands]
        if unknown:
            raise ConfigError(f"{where}: unknown band(s) {unknown}; bands are {list(entry.bands)}")
        if len(set(bands)) != len(bands):
            raise ConfigError(f"{where}: a band is listed twice in {list(bands)}")

        patch_size = override.patch_size if override.patch_size is not None else entry.patch_size
        image_size = override.image_size if override.image_size is not None else entry.size_px
        if patch_size is None or patch_size < 1:
            raise ConfigError(f"{where}: patch size must be a positive integer, got {patch_size}")
        if image_size < 1:
            raise ConfigError(f"{where}: image size must be positive, got {image_size}")
        if image_size % patch_size:
            raise ConfigError(f"{where}: patch size {patch_size} does not divide image size {image_size}")
        grid = image_size // patch_size
        if self.grid_size % grid:
            raise ConfigError(
                f"{where}: token grid {grid}x{grid} (image {image_size} / patch {patch_size}) does not "
                f"divide the common position grid {self.grid_size}x{self.grid_size}; co-located tokens "
                f"of different modalities would not share positions"
            )

        num_dates = override.num_dates if override.num_dates is not None else (entry.num_dates or 1)
        if num_dates < 1:
            raise ConfigError(f"{where}: num_dates must be >= 1, got {num_dates}")

        token_groups = override.token_groups if override.token_groups is not None else (bands,)
        flat = [b for group in token_groups for b in group]
        if any(len(group) == 0 for group in token_groups) or sorted(flat) != sorted(bands):
            raise ConfigError(
                f"{where}: token_groups {[list(g) for g in token_groups]} must split the bands "
                f"{list(bands)} into non-empty groups, each band exactly once"
            )
        token_indices = tuple(tuple(bands.index(b) for b in group) for group in token_groups)

        norm_groups = [tuple(g) for g in entry.norm_group_indices(bands)]
        covered = {i for g in norm_groups for i in g}
        leftover = tuple(i for i in range(len(bands)) if i not in covered)
        if leftover:  # a band outside every registry group is normalised on its own group
            norm_groups.append(leftover)
        for group in norm_groups:
            if len(group) * patch_size * patch_size < 2:
                raise ConfigError(
                    f"{where}: target normalisation group {[bands[i] for i in group]} with patch size "
                    f"{patch_size} has a single value per patch; its unbiased variance is undefined"
                )

        return ModalitySpec(
            key=key,
            bands=bands,
            patch_size=patch_size,
            image_size=image_size,
            num_dates=num_dates,
            token_groups=token_indices,
            norm_groups=tuple(norm_groups),
            fusion_group=entry.fusion_group or key,
        )


@dataclass(frozen=True)
class MAEConfig(ConfigMixin):
    """The pretraining wrapper around an encoder: masking, decoders, pixel heads. Immutable."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask_ratio: float = 0.75
    p_drop_modality: float = 0.25
    """Structured mask prior: a whole modality of a multi-modality group goes first."""
    p_drop_date: float = 0.25
    """Structured mask prior: a whole date of a time series goes first."""
    p_drop_location: float = 0.25
    """Structured mask prior: a token position across all dates goes first."""
    p_drop_band_group: float = 0.25
    """Structured mask prior: a token band group goes first (only with several band groups)."""
    decoder_width: int = 512
    decoder_depth: int | None = None
    """Default: 1/2/3/4 for tiny/small/medium/large encoders."""
    decoder_heads: int = 16
    decoder_mlp_hidden: int | None = None
    """Default: 4 x encoder width (the reference's quirk, kept for weight compatibility)."""
    normalize_targets: bool = True
    """Reconstruct each (patch, band group) standardised, as the reference MAESTRO (and MAE's
    ``norm_pix_loss``) does: the encoder is paid for structure, not for a patch's mean level.
    False reconstructs the network-scale pixels, so the encoder must also keep absolute
    reflectance, elevation and backscatter, which some classes are told apart by."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", config_io.nested(EncoderConfig, self.encoder, "encoder"))
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio: {self.mask_ratio} must be in (0, 1)")
        for name in ("p_drop_modality", "p_drop_date", "p_drop_location", "p_drop_band_group"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}: probability {value} must be in [0, 1]")
        validate_size("decoder", self.decoder)

    @property
    def decoder(self) -> TransformerSize:
        encoder = self.encoder
        depth = self.decoder_depth if self.decoder_depth is not None else SIZES[encoder.size].decoder_depth
        hidden = (
            self.decoder_mlp_hidden if self.decoder_mlp_hidden is not None else 4 * encoder.transformer.width
        )
        return TransformerSize(self.decoder_width, depth, self.decoder_heads, hidden)


def validate_size(name: str, size: TransformerSize) -> None:
    """Depth, heads and width constraints of one transformer stack (the width carries the codes)."""
    if size.depth < 1 and name == "encoder":
        raise ConfigError(f"{name} depth must be >= 1, got {size.depth}")
    if size.depth < 0:
        raise ConfigError(f"{name} depth must be >= 0, got {size.depth}")
    if size.num_heads < 1 or size.width % size.num_heads:
        raise ConfigError(f"{name} width {size.width} is not divisible by its {size.num_heads} heads")
    position_channels = size.width - DATE_CHANNELS
    if position_channels <= 0 or position_channels % 4:
        raise ConfigError(
            f"{name} width {size.width}: width - {DATE_CHANNELS} date channels must be a positive "
            f"multiple of 4 for the 2-D sin-cos position code"
        )
    if size.mlp_hidden < 1:
        raise ConfigError(f"{name} MLP hidden size must be >= 1, got {size.mlp_hidden}")
