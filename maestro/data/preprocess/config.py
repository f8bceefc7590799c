"""What preprocessing feeds the network: input modalities, their bands and date counts, options.

Per-modality choices use the suite's one override type, :class:`~maestro.modalities.ModalityOverride`
(the model config takes the same mapping), so the data always matches what the model expects.
Preprocessing reads only its ``bands`` and ``num_dates``; the other fields concern the tokenizer.
Everything is resolved against the registry and validated at construction: a bad value fails at
start, not in a data-loader worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from maestro.config import nested
from maestro.errors import ConfigError
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, Modality, ModalityOverride

EvalOffset = Literal["centre", "start"]
NanPolicy = Literal["reject", "fill"]

_OVERRIDE_KEYS = tuple(f.name for f in dataclasses.fields(ModalityOverride))


@dataclass(frozen=True)
class ResolvedInput:
    """One input modality as preprocessing feeds it, resolved against the registry."""

    key: str
    bands: tuple[str, ...]
    """Selected bands in network order (e.g. NIR, R, G, B for aerial)."""
    band_indices: tuple[int, ...]
    """Positions of ``bands`` in on-disk order."""
    num_dates: int | None
    """Dates a series is reduced to; ``None`` keeps every date (mono-temporal inputs, or a series
    named in ``keep_all_dates``, whose length then varies between samples and collation pads it)."""

    @property
    def entry(self) -> Modality:
        return MODALITIES[self.key]

    @property
    def device_band_order(self) -> tuple[int, ...] | None:
        """Band order that :func:`~maestro.data.preprocess.device.scale_batch` applies to values
        that travelled unscaled, when the selection keeps every on-disk band, only reordered (NIR,
        R, G, B for aerial): the workers then ship them in disk order, without a copy. None when
        the workers select the bands themselves (a subset, or disk order already)."""
        everything = tuple(range(self.entry.num_bands))
        if self.band_indices == everything or tuple(sorted(self.band_indices)) != everything:
            return None
        return self.band_indices


def _as_override(key: str, value: Any) -> ModalityOverride:
    """A ModalityOverride from itself or a YAML-shaped mapping (unknown keys fail here)."""
    if value is None:
        value = {}
    if isinstance(value, Mapping):
        bad = sorted(set(value) - set(_OVERRIDE_KEYS))
        if bad:
            raise ConfigError(f"{key}: unknown override keys {bad}; allowed: {list(_OVERRIDE_KEYS)}")
    return nested(ModalityOverride, value, f"overrides.{key}")


def _resolve_input(key: str, override: ModalityOverride, keep_all_dates: bool) -> ResolvedInput:
    """Registry defaults plus the override's bands and num_dates, validated."""
    if key not in MODALITIES:
        raise ConfigError(f"unknown input modality {key!r}; known: {sorted(MODALITIES)}")
    entry = MODALITIES[key]
    if not entry.is_input:
        hint = f" (it is the mask of {entry.companion_of!r})" if entry.companion_of else ""
        raise ConfigError(
            f"modality {key!r} is a {entry.kind}, not a network input{hint}; "
            "masks are used automatically by cloud avoidance and labels go to 'labels'"
        )
    bands = entry.input_bands if override.bands is None else override.bands
    if isinstance(bands, str):
        raise ConfigError(f"{key}: bands must be a list of band names, got the string {bands!r}")
    bands = tuple(bands)
    if not bands:
        raise ConfigError(f"{key}: at least one band must be selected")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"{key}: band listed twice in {bands}")
    try:
        band_indices = tuple(entry.band_indices(bands))
    except ValueError as error:  # names the unknown band
        raise ConfigError(str(error)) from None

    if keep_all_dates and override.num_dates is not None:
        raise ConfigError(
            f"{key}: num_dates {override.num_dates} contradicts keep_all_dates, which keeps every date"
        )
    num_dates = (
        None if keep_all_dates else (entry.num_dates if override.num_dates is None else override.num_dates)
    )
    if num_dates is not None:
        if isinstance(num_dates, bool) or not isinstance(num_dates, int | np.integer):
            raise ConfigError(f"{key}: num_dates must be a positive integer or null, got {num_dates!r}")
        if num_dates < 1:
            raise ConfigError(f"{key}: num_dates must be >= 1, got {num_dates}")
        if not entry.temporal and num_dates != 1:
            raise ConfigError(f"{key} is mono-temporal; num_dates must be 1 or null, got {num_dates}")
        num_dates = int(num_dates)
    return ResolvedInput(key, bands, band_indices, num_dates)


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing of one model sample; validated at construction (bad values fail at start)."""

    modalities: tuple[str, ...] = DEFAULT_INPUTS
    """Input modality keys, in the order the sample's ``inputs`` lists them."""
    overrides: dict[str, ModalityOverride] = field(default_factory=dict)
    """Per-modality ``bands`` / ``num_dates``; ``None`` (or absent) keeps the registry default."""
    keep_all_dates: tuple[str, ...] = ()
    """Time series kept whole, without date selection (collation pads their varying lengths)."""
    cloud_avoidance: bool = True
    """Avoid dates flagged by the image's companion mask (the mask whose ``companion_of`` is it)."""
    cloud_threshold: float = 0.0
    """A mask pixel is flagged when any of its mask bands (snow, cloud probability) exceeds this."""
    reference_modality: str = "aerial"
    """Its date is the time origin when the sample has one; otherwise the earliest input date."""
    eval_offset: EvalOffset = "centre"
    """Bin offset at evaluation: ``centre`` drops the ``T % n`` spare dates evenly at both ends."""
    nan_policy: NanPolicy = "reject"
    """Non-finite values (NaN / inf) left after scaling and date selection. ``reject``: the sample
    is a DataError naming the patch. ``fill``: the model has no per-pixel mask, so a date whose
    non-finite share exceeds ``nan_invalid_fraction`` is marked invalid (``valid=False``, values
    zeroed, like a padding date: the encoder never attends to it) and the remaining non-finite
    values are set to 0 in scaled units. Shards keep NaN only when built with ``--allow-nan``."""
    nan_invalid_fraction: float = 0.5
    """With ``nan_policy: fill``: share of a date's values (all bands and pixels) above which the date
    is invalid; 0 invalidates any date with a NaN, 1 never invalidates."""
    scale_on_device: bool = False
    """Leave integer rasters whose scaling is a division (aerial, SPOT, S2, historical) in their
    on-disk dtype: 4x (uint8) or 2x (uint16) fewer bytes through loader workers, shared memory and
    the host-to-device copy. :func:`~maestro.data.preprocess.device.scale_batch` applies the
    registry's scaling after the transfer (the shard data module does it for every stage)."""
    keep_flags: tuple[str, ...] = ()
    """Time series whose per-pixel flags (companion mask above ``cloud_threshold``, after date
    selection and padding) go into the model sample under ``flags``: cloud removal needs to know
    which pixels it may trust and which it must fill."""
    cloudy_date_fraction: float | None = None
    """Mark a kept date invalid (``valid=False``, values zeroed, like a padding date) when more than
    this share of its pixels is flagged by its companion mask (``cloud_threshold``); None keeps
    every date. The Swin-UTAE baseline drops Sentinel-2 dates flagged on more than 5 % (0.05)."""

    def __post_init__(self) -> None:
        modalities = _keys(self.modalities, "modalities")
        if not modalities:
            raise ConfigError("PreprocessConfig needs at least one input modality")
        duplicates = sorted({k for k in modalities if modalities.count(k) > 1})
        if duplicates:
            raise ConfigError(f"input modalities listed twice: {duplicates}")
        if not isinstance(self.overrides, Mapping):
            raise ConfigError(
                f"overrides must map modality keys to overrides, got {type(self.overrides).__name__}"
            )
        overrides = {key: _as_override(key, value) for key, value in self.overrides.items()}
        stray = sorted(set(overrides) - set(modalities))
        if stray:
            raise ConfigError(
                f"overrides given for modalities that are not inputs: {stray}; inputs are {list(modalities)}"
            )
        keep_all = _keys(self.keep_all_dates, "keep_all_dates")
        stray = sorted(set(keep_all) - set(modalities))
        if stray:
            raise ConfigError(
                f"keep_all_dates names modalities that are not inputs: {stray}; inputs are {list(modalities)}"
            )
        flags = _keys(self.keep_flags, "keep_flags")
        without = [key for key in flags if key not in modalities or not _has_mask(key)]
        if without:
            raise ConfigError(
                f"keep_flags: {without} are not input time series with a cloud mask; inputs are {list(modalities)}"
            )
        object.__setattr__(self, "keep_flags", flags)
        inputs = tuple(
            _resolve_input(key, overrides.get(key, ModalityOverride()), key in keep_all) for key in modalities
        )
        object.__setattr__(self, "modalities", modalities)
        object.__setattr__(self, "overrides", overrides)
        object.__setattr__(self, "keep_all_dates", keep_all)
        object.__setattr__(self, "_inputs", inputs)
        if not isinstance(self.cloud_avoidance, bool):
            raise ConfigError(f"cloud_avoidance must be true or false, got {self.cloud_avoidance!r}")
        if not np.isfinite(self.cloud_threshold) or self.cloud_threshold < 0:
            raise ConfigError(f"cloud_threshold must be a finite value >= 0, got {self.cloud_threshold!r}")
        if self.reference_modality not in MODALITIES:
            raise ConfigError(f"unknown reference_modality {self.reference_modality!r}")
        if self.eval_offset not in ("centre", "start"):
            raise ConfigError(f"eval_offset must be 'centre' or 'start', got {self.eval_offset!r}")
        if self.nan_policy not in ("reject", "fill"):
            raise ConfigError(f"nan_policy must be 'reject' or 'fill', got {self.nan_policy!r}")
        fraction = self.nan_invalid_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise ConfigError(f"nan_invalid_fraction must be a number in [0, 1], got {fraction!r}")
        cloudy = self.cloudy_date_fraction
        bad = isinstance(cloudy, bool) or not isinstance(cloudy, int | float) or not 0 <= cloudy <= 1
        if cloudy is not None and bad:
            raise ConfigError(f"cloudy_date_fraction must be null or a number in [0, 1], got {cloudy!r}")

    @property
    def inputs(self) -> tuple[ResolvedInput, ...]:
        """Every input resolved against the registry, in ``modalities`` order."""
        return self._inputs  # type: ignore[attr-defined]

    def spec(self, modality: str) -> ResolvedInput:
        for spec in self.inputs:
            if spec.key == modality:
                return spec
        raise KeyError(f"{modality!r} is not an input of this config; inputs are {list(self.modalities)}")


def _keys(value: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{name} must be a list of modality keys, got the string {value!r}")
    return tuple(value)


def build_preprocess_config(
    modalities: Iterable[str] = DEFAULT_INPUTS,
    overrides: Mapping[str, ModalityOverride | Mapping[str, Any] | None] | None = None,
    **options: Any,
) -> PreprocessConfig:
    """Config from modality keys, YAML-shaped per-modality overrides and options.

    ``overrides`` maps a modality key to a :class:`~maestro.modalities.ModalityOverride` or a mapping
    such as ``{"bands": [...], "num_dates": 4}``; ``options`` are the other :class:`PreprocessConfig`
    fields (``keep_all_dates``, ``cloud_avoidance``, ...). Unknown keys fail here, at start.
    """
    allowed = {f.name for f in dataclasses.fields(PreprocessConfig)} - {"modalities", "overrides"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown preprocessing options {unknown}; allowed: {sorted(allowed)}")
    return PreprocessConfig(
        modalities=_keys(modalities, "modalities"), overrides=dict(overrides or {}), **options
    )


def _has_mask(key: str) -> bool:
    """Whether a registry time series has a companion mask (``s2``: ``s2_mask``)."""
    entry = MODALITIES.get(key)
    return (
        entry is not None
        and entry.temporal
        and any(m.kind == "mask" and m.companion_of == key for m in MODALITIES.values())
    )
