"""Configuration of the supervised Swin-UTAE baseline: inputs, tasks, Swin, U-TAE and decoder widths.

Immutable and validated at construction (:class:`~maestro.errors.ConfigError`), like the MAESTRO
configs. The inputs are an :class:`~maestro.models.config.EncoderConfig` (modalities, bands, image
sizes, dates per series) so that the data pipeline's ``preprocess_for(config.encoder.specs)`` feeds
both models the same samples; the baseline reads only those facts from it, none of its transformer
fields. Defaults follow docs/method.md, "Supervised baseline: Swin-UTAE".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from maestro.models.config import EncoderConfig

DEFAULT_SWIN = "swin_base_patch4_window12_384"
MAY_15 = 134
"""0-based day of year of May 15 in a common year: the origin of the U-TAE's day offsets."""


@dataclass(frozen=True)
class SwinConfig:
    """One timm Swin per single-date modality; the fields left ``None`` keep the timm model's own."""

    name: str = DEFAULT_SWIN
    embed_dim: int | None = None
    depths: tuple[int, ...] | None = None
    num_heads: tuple[int, ...] | None = None
    window_size: int | None = None
    """Smaller Swins (tests, CPU runs) change these; a pretrained checkpoint then no longer fits."""

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
                if len(value) != 4:
                    raise ConfigError(f"{name}: a Swin has 4 stages, got {list(value)}")

    def timm_kwargs(self) -> dict[str, Any]:
        names = ("embed_dim", "depths", "num_heads", "window_size")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


FUSED_WIDTHS = (64, 64, 128, 128)
"""U-TAE encoder and decoder widths beside a Swin (docs/method.md)."""
ALONE_WIDTHS = ((64, 64, 64, 128), (32, 32, 64, 128))
"""U-TAE's own widths (encoder, decoder), used when no Swin is there: the paper's 0.9 M for S2 alone."""


@dataclass(frozen=True)
class UTAEConfig:
    """U-TAE per Sentinel modality (docs/method.md): widths, L-TAE and the date code."""

    encoder_widths: tuple[int, ...] | None = None
    decoder_widths: tuple[int, ...] | None = None
    """None: 64, 64, 128, 128 both when fused with a Swin; alone (S1/S2-only configurations), the
    U-TAE's own 64, 64, 64, 128 / 32, 32, 64, 128 (the paper's parameter counts show both)."""
    out_widths: tuple[int, ...] = (32,)
    """Hidden widths of the output convolutions before the class logits."""
    kernel_size: int = 3
    stride: int = 1
    """Of the down / up convolutions: 1 keeps every level at 10 px (FLAIR-HUB's Sentinel patches)."""
    num_heads: int = 16
    d_model: int = 256
    d_k: int = 4
    period: float = 1000.0
    """T of the sinusoidal date code."""
    norm_groups: int = 4
    """GroupNorm groups of the per-date encoder convolutions."""
    dropout: float = 0.2
    """On the L-TAE attention weights and output."""
    reference_day: int = MAY_15
    """Day offsets count from this day of the acquisition year (0-based day of year)."""
    monthly_average: bool = False
    """Average the valid dates of each calendar month into one date before the U-TAE."""

    def __post_init__(self) -> None:
        for name in ("encoder_widths", "decoder_widths", "out_widths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        for fused in (True, False):
            self._check_widths(*self.widths(fused))
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ConfigError(
                f"d_model {self.d_model} must split into {self.num_heads} heads of an even size"
            )
        if self.stride < 1 or self.kernel_size < self.stride or (self.kernel_size - self.stride) % 2:
            raise ConfigError(
                f"kernel_size {self.kernel_size} / stride {self.stride}: need kernel >= stride and an even difference"
            )
        if self.period <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"period {self.period} must be > 0 and dropout {self.dropout} in [0, 1)")

    def widths(self, fused: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(encoder, decoder) widths, beside a Swin (``fused``) or alone."""
        encoder, decoder = (FUSED_WIDTHS, FUSED_WIDTHS) if fused else ALONE_WIDTHS
        return self.encoder_widths or encoder, self.decoder_widths or decoder

    def _check_widths(self, encoder: tuple[int, ...], decoder: tuple[int, ...]) -> None:
        if len(encoder) < 2 or len(encoder) != len(decoder) or encoder[-1] != decoder[-1]:
            raise ConfigError(
                f"encoder_widths {list(encoder)} and decoder_widths {list(decoder)} need the same length (>= 2) "
                "and the same last width (the L-TAE level)"
            )
        if any(width % self.norm_groups for width in encoder):
            raise ConfigError(
                f"norm_groups {self.norm_groups} must divide every encoder width {list(encoder)}"
            )
        if any(width % self.num_heads for width in encoder):
            raise ConfigError(
                f"num_heads {self.num_heads} must divide every encoder width {list(encoder)}: "
                "each head's attention weights one channel group"
            )


def _tasks(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"tasks: expected a non-empty mapping task -> number of classes, got {value!r}")
    tasks = {str(name): count for name, count in value.items()}
    for name, count in tasks.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise ConfigError(f"tasks.{name}: {count!r} classes; need an integer >= 2")
    return tasks


@dataclass(frozen=True)
class BaselineOptions:
    """The Swin-UTAE settings a fine-tuning run chooses (``finetune``'s ``model.baseline`` section)."""

    swin: SwinConfig = field(default_factory=SwinConfig)
    utae: UTAEConfig = field(default_factory=UTAEConfig)
    decoder_channels: int = 128
    cloudy_date_fraction: float | None = 0.05
    """Preprocessing: a Sentinel-2 date whose snow / cloud mask flags more than this share of its
    pixels is invalid, i.e. dropped (the paper's 5 %); None keeps every selected date."""

    def __post_init__(self) -> None:
        if self.decoder_channels < 1:
            raise ConfigError(f"decoder_channels {self.decoder_channels} must be > 0")
        _check_fraction(self.cloudy_date_fraction)


def _check_fraction(fraction: float | None) -> None:
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"cloudy_date_fraction {fraction} must be null or in [0, 1]")


@dataclass(frozen=True)
class SwinUTAEConfig(ConfigMixin):
    """The whole baseline: inputs, task heads and the per-modality encoders."""

    encoder: EncoderConfig
    """Only its inputs are read: modalities, bands, image sizes and dates per series."""
    tasks: dict[str, int]
    """Task name -> classes, one UPerNet decoder each; the first is what ``forward`` returns."""
    label_size: int = 512
    swin: SwinConfig = field(default_factory=SwinConfig)
    utae: UTAEConfig = field(default_factory=UTAEConfig)
    decoder_channels: int = 128
    """Width of the UPerNet decoders (smp's ``UPerNetDecoder``). 128 keeps the parameter budget of
    the paper's decoder (pyramid 256, segmentation 64, an older smp layout): BENCHMARKS.md."""
    pretrained: bool = True
    """ImageNet weights for the Swins through timm's normal loading (Hugging Face Hub cache); without
    network and without cached weights building the model fails with a message, never falls back
    to random weights silently: ``false`` asks for random weights."""
    aux_heads: bool = False
    """Per modality and task, an auxiliary classifier on that modality's features alone."""
    modality_dropout: float = 0.0
    """Training only: per sample and modality, the probability that all its dates become invalid."""
    cloudy_date_fraction: float | None = 0.05
    """The preprocessing the network is fed with (not a layer): a Sentinel-2 date whose snow / cloud
    mask flags more than this share of its pixels is invalid; None keeps every selected date. Kept
    here so that a published baseline is fed as it was trained (``predict``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", config_io.nested(EncoderConfig, self.encoder, "encoder"))
        object.__setattr__(self, "tasks", _tasks(self.tasks))
        _check_fraction(self.cloudy_date_fraction)
        if self.label_size < 1 or self.decoder_channels < 1:
            raise ConfigError(
                f"label_size {self.label_size} and decoder_channels {self.decoder_channels} must be > 0"
            )
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout: {self.modality_dropout} must be in [0, 1)")
        missing = [key for key in self.single_date if MODALITIES[key].mean is None]
        if missing:
            raise ConfigError(
                f"single-date inputs {missing} have no dataset statistics in the registry to standardise them"
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.encoder.modalities

    @property
    def single_date(self) -> tuple[str, ...]:
        """Inputs encoded by a Swin (the registry's mono-temporal modalities)."""
        return tuple(key for key in self.modalities if not MODALITIES[key].temporal)

    @property
    def series(self) -> tuple[str, ...]:
        """Inputs encoded by a U-TAE (the registry's time series)."""
        return tuple(key for key in self.modalities if MODALITIES[key].temporal)

    @property
    def total_classes(self) -> int:
        return sum(self.tasks.values())

    @property
    def num_classes(self) -> int:
        """Output channels of ``forward``'s logits: the first task's classes."""
        return next(iter(self.tasks.values()))

    def preprocess_options(self) -> dict[str, float | None]:
        """What the baseline's preprocessing adds to the shared one (``preprocess_for`` options)."""
        return {"cloudy_date_fraction": self.cloudy_date_fraction}
