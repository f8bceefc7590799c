"""MAESTRO preprocessing: raw sample (as the reader returns it) -> model sample.

Both contracts are documented in :mod:`maestro.sample`. The steps follow ``shared/DESIGN.md``
section 4 ("Inputs", "Time steps") and read every per-modality fact from the registry:

1. band selection / reordering into network order (``Modality.band_indices``), cast to float32;
2. MAESTRO scaling (``Modality.scaling``), applied in place on the float32 copy;
3. for time series, reduction to ``num_dates`` dates: the series is cut into ``num_dates``
   contiguous bins of ``T // num_dates`` dates starting at an offset in ``0..T % num_dates``
   (random in training, centred at evaluation), and one date is kept per bin: a random one in
   training, at evaluation the one closest to the bin's per-pixel nan-median. Dates flagged by the
   image's companion mask (e.g. snow/cloud probability > 0) are avoided unless the whole bin is
   flagged, in which case the least-flagged dates compete;
4. series shorter than ``num_dates`` are padded with zeros and ``valid=False`` (the reference
   crashes on them);
5. ``times`` rows ``[years since the reference date, day of year, hour]`` with the reference date
   being the aerial date (``PreprocessConfig.reference_modality``) or the sample's earliest date.

Everything here is vectorised numpy: it runs in data-loader workers for every sample.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from einops import rearrange

from maestro.dates import PAD_DATE, year_and_doy
from maestro.errors import DataError
from maestro.modalities import (
    DEFAULT_INPUTS,
    MODALITIES,
    Modality,
)
from maestro.sample import DATES, INPUTS, LABELS, META, TIMES, VALID, Sample

logger = logging.getLogger(__name__)

EvalOffset = Literal["centre", "start"]
RngLike = np.random.Generator | int | None

REGISTRY_DEFAULT = "registry"
"""Placeholder meaning "use the registry's value"; ``None`` for ``num_dates`` means "keep all"."""

_OVERRIDE_KEYS = ("bands", "num_dates")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """How one input modality is fed to the network.

    ``bands`` defaults to the registry's ``input_bands`` (network order, e.g. NIR,R,G,B for
    aerial); ``num_dates`` defaults to the registry's ``num_dates`` (16 for s2, 4 for s1, ``None``
    for mono-temporal modalities). ``num_dates=None`` on a time series keeps every date, so the
    series length varies between samples and collation pads it.
    """

    modality: str
    bands: tuple[str, ...] | None = None
    num_dates: int | None | str = REGISTRY_DEFAULT

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown input modality {self.modality!r}; known: {sorted(MODALITIES)}")
        entry = MODALITIES[self.modality]
        if not entry.is_input:
            hint = f" (it is the mask of {entry.companion_of!r})" if entry.companion_of else ""
            raise ValueError(
                f"modality {self.modality!r} is a {entry.kind}, not a network input{hint}; "
                "masks are used automatically by cloud avoidance and labels go to 'labels'"
            )
        bands = entry.input_bands if self.bands is None else self.bands
        if isinstance(bands, str):
            raise ValueError(f"{self.modality}: bands must be a list of band names, got the string {bands!r}")
        bands = tuple(bands)
        if not bands:
            raise ValueError(f"{self.modality}: at least one band must be selected")
        if len(set(bands)) != len(bands):
            raise ValueError(f"{self.modality}: band listed twice in {bands}")
        entry.band_indices(bands)  # raises ValueError naming the unknown band
        object.__setattr__(self, "bands", bands)

        num_dates = entry.num_dates if self.num_dates == REGISTRY_DEFAULT else self.num_dates
        if num_dates is not None:
            if isinstance(num_dates, bool) or not isinstance(num_dates, int | np.integer):
                raise ValueError(f"{self.modality}: num_dates must be a positive integer or null, got {num_dates!r}")
            if num_dates < 1:
                raise ValueError(f"{self.modality}: num_dates must be >= 1, got {num_dates}")
            if not entry.temporal and num_dates != 1:
                raise ValueError(f"{self.modality} is mono-temporal; num_dates must be 1 or null, got {num_dates}")
            num_dates = int(num_dates)
        object.__setattr__(self, "num_dates", num_dates)

    @property
    def entry(self) -> Modality:
        return MODALITIES[self.modality]

    @property
    def band_indices(self) -> list[int]:
        """Positions of the selected bands in on-disk order."""
        return self.entry.band_indices(self.bands or ())


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing of one model sample; validated at construction (bad values fail at start)."""

    inputs: tuple[InputSpec, ...] = field(default_factory=lambda: tuple(InputSpec(k) for k in DEFAULT_INPUTS))
    cloud_avoidance: bool = True
    """Avoid dates flagged by the image's companion mask (the mask whose ``companion_of`` is it)."""
    cloud_threshold: float = 0.0
    """A mask pixel is flagged when any of its mask bands (snow, cloud probability) exceeds this."""
    reference_modality: str = "aerial"
    """Its date is the time origin when the sample has one; otherwise the earliest input date."""
    eval_offset: EvalOffset = "centre"
    """Bin offset at evaluation: ``centre`` drops the ``T % n`` spare dates evenly at both ends."""

    def __post_init__(self) -> None:
        inputs = tuple(InputSpec(s) if isinstance(s, str) else s for s in self.inputs)
        if not inputs:
            raise ValueError("PreprocessConfig needs at least one input modality")
        for spec in inputs:
            if not isinstance(spec, InputSpec):
                raise ValueError(f"inputs must be modality keys or InputSpec, got {spec!r}")
        keys = [s.modality for s in inputs]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"input modalities listed twice: {duplicates}")
        object.__setattr__(self, "inputs", inputs)
        if not isinstance(self.cloud_avoidance, bool):
            raise ValueError(f"cloud_avoidance must be true or false, got {self.cloud_avoidance!r}")
        if not np.isfinite(self.cloud_threshold) or self.cloud_threshold < 0:
            raise ValueError(f"cloud_threshold must be a finite value >= 0, got {self.cloud_threshold!r}")
        if self.reference_modality not in MODALITIES:
            raise ValueError(f"unknown reference_modality {self.reference_modality!r}")
        if self.eval_offset not in ("centre", "start"):
            raise ValueError(f"eval_offset must be 'centre' or 'start', got {self.eval_offset!r}")

    @property
    def modalities(self) -> list[str]:
        return [s.modality for s in self.inputs]

    def spec(self, modality: str) -> InputSpec:
        for spec in self.inputs:
            if spec.modality == modality:
                return spec
        raise KeyError(f"{modality!r} is not an input of this config; inputs are {self.modalities}")


def build_preprocess_config(
    modalities: Iterable[str] = DEFAULT_INPUTS,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> PreprocessConfig:
    """Config from a list of modality keys plus optional per-modality overrides (YAML-shaped).

    ``overrides`` maps a modality key to ``{"bands": [...], "num_dates": int | null}``;
    ``options`` are the other :class:`PreprocessConfig` fields. Unknown keys fail here, at start.
    """
    modalities = list(modalities)
    overrides = dict(overrides or {})
    stray = sorted(set(overrides) - set(modalities))
    if stray:
        raise ValueError(f"overrides given for modalities that are not inputs: {stray}; inputs are {modalities}")
    allowed = {f.name for f in dataclasses.fields(PreprocessConfig)} - {"inputs"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown preprocessing options {unknown}; allowed: {sorted(allowed)}")
    specs = []
    for key in modalities:
        extra = dict(overrides.get(key) or {})
        bad = sorted(set(extra) - set(_OVERRIDE_KEYS))
        if bad:
            raise ValueError(f"{key}: unknown override keys {bad}; allowed: {list(_OVERRIDE_KEYS)}")
        if "bands" in extra and extra["bands"] is not None and not isinstance(extra["bands"], str):
            extra["bands"] = tuple(extra["bands"])
        specs.append(InputSpec(key, **extra))
    return PreprocessConfig(inputs=tuple(specs), **options)


# --------------------------------------------------------------------------------------------
# Small reusable steps
# --------------------------------------------------------------------------------------------


def select_bands(raw: np.ndarray, band_indices: list[int]) -> np.ndarray:
    """(T, C_disk, H, W) raster -> new float32 (T, C, H, W) in the given band order.

    One allocation and one casting pass per band: the 512 px rasters are never copied twice.
    """
    out = np.empty((raw.shape[0], len(band_indices), *raw.shape[2:]), dtype=np.float32)
    for position, index in enumerate(band_indices):
        out[:, position] = raw[:, index]
    return out


def scale_inplace(values: np.ndarray, modality: Modality, bands: tuple[str, ...]) -> np.ndarray:
    """Apply the registry scaling of ``modality`` to float32 ``values`` (``..., C, H, W``).

    The registry's scalings work in place on float32 arrays, so the rasters are not copied again.
    """
    if modality.scaling is None:
        return values
    return modality.scaling(values, bands)


def mask_companion(modality: str) -> Modality | None:
    """The mask modality whose ``companion_of`` is ``modality`` (``s2`` -> ``s2_mask``), if any."""
    for entry in MODALITIES.values():
        if entry.kind == "mask" and entry.companion_of == modality:
            return entry
    return None


def flagged_pixels(mask: np.ndarray, threshold: float) -> np.ndarray:
    """(T, C_mask, H, W) mask -> (T, H, W) bool: any mask band (snow, cloud) above ``threshold``."""
    return (np.asarray(mask) > threshold).any(axis=1)


def nanmedian_over_axis1(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=1)`` via one sort, without warnings on all-NaN slices.

    numpy's nanmedian goes through masked arrays for this shape; a sort (NaN sorts last) plus
    two gathers is several times faster. All-NaN slices give NaN.
    """
    ordered = np.sort(values, axis=1)
    count = (~np.isnan(values)).sum(axis=1, keepdims=True)
    low = np.maximum((count - 1) // 2, 0)
    high = count // 2
    median = np.take_along_axis(ordered, low, axis=1) + np.take_along_axis(ordered, high, axis=1)
    median *= np.float32(0.5)
    return median[:, 0]


def median_distance(series: np.ndarray, flagged: np.ndarray | None = None) -> np.ndarray:
    """Closeness of each date to its bin's per-pixel nan-median: (n, s, C, H, W) -> (n, s).

    Distance = mean absolute difference over the pixels and bands that are comparable (not
    flagged in this date, not NaN, and with at least one unflagged observation in the bin).
    Flagged pixels are NaN for the median so clouds do not drag it. A date with nothing
    comparable gets +inf.
    """
    if flagged is not None:
        series = np.where(flagged[:, :, None], np.float32(np.nan), series)
    with np.errstate(invalid="ignore"):  # inf - inf in corrupt data: excluded below, then rejected
        median = nanmedian_over_axis1(series)
        diff = np.abs(series - median[:, None])
    comparable = np.isfinite(diff)
    total = np.where(comparable, diff, 0).sum(axis=(2, 3, 4), dtype=np.float64)
    count = comparable.sum(axis=(2, 3, 4))
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def bin_offset(num_available: int, num_dates: int, rng: np.random.Generator | None, eval_offset: EvalOffset) -> int:
    """Start of the first bin: uniform in ``0..T % n`` in training, fixed at evaluation."""
    spare = num_available % num_dates
    if rng is not None:
        return int(rng.integers(0, spare + 1))
    return spare // 2 if eval_offset == "centre" else 0


def select_dates(
    values: np.ndarray,
    num_dates: int,
    *,
    rng: np.random.Generator | None,
    flagged: np.ndarray | None = None,
    eval_offset: EvalOffset = "centre",
) -> np.ndarray:
    """Indices (increasing) of the dates kept from a (T, C, H, W) series, one per bin.

    ``rng=None`` means evaluation (deterministic: the date closest to the bin median);
    otherwise a random date per bin. ``flagged`` (T, H, W) marks cloudy/snowy pixels: within a bin
    only the dates with the smallest flagged fraction compete, i.e. the clear dates when there
    are any. A series of at most ``num_dates`` dates is kept whole (callers pad it).
    """
    total = values.shape[0]
    if total <= num_dates:
        return np.arange(total)
    size = total // num_dates
    offset = bin_offset(total, num_dates, rng, eval_offset)
    bins = rearrange(np.arange(offset, offset + num_dates * size), "(n s) -> n s", n=num_dates)
    if size == 1:
        return bins[:, 0]
    candidates = np.ones(bins.shape, dtype=bool)
    if flagged is not None:
        cloudiness = rearrange(flagged, "t h w -> t (h w)").mean(axis=1)[bins]
        candidates = cloudiness == cloudiness.min(axis=1, keepdims=True)
    if rng is not None:
        score = np.where(candidates, rng.random(bins.shape), -1.0)
        choice = score.argmax(axis=1)
    else:
        window = values[bins[0, 0] : bins[-1, -1] + 1]
        series = rearrange(window, "(n s) c h w -> n s c h w", n=num_dates)
        window_flags = None
        if flagged is not None:
            window_flags = rearrange(flagged[bins[0, 0] : bins[-1, -1] + 1], "(n s) h w -> n s h w", n=num_dates)
        distance = np.where(candidates, median_distance(series, window_flags), np.inf)
        choice = distance.argmin(axis=1)
    return bins[np.arange(num_dates), choice]


def pad_series(
    values: np.ndarray, dates: np.ndarray, num_dates: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad a (T, C, H, W) series and its dates to ``num_dates`` with zeros; returns the valid mask."""
    length = values.shape[0]
    target = length if num_dates is None else max(num_dates, length)
    valid = np.zeros(target, dtype=bool)
    valid[:length] = True
    if target == length:
        return values, dates.astype(np.int32, copy=False), valid
    padded = np.zeros((target, *values.shape[1:]), dtype=values.dtype)
    padded[:length] = values
    padded_dates = np.full(target, PAD_DATE, dtype=np.int32)
    padded_dates[:length] = dates
    return padded, padded_dates, valid


def date_times(dates: np.ndarray, reference: int | None) -> np.ndarray:
    """(T,) int YYYYMMDD -> float32 (T, 3) ``[years since reference, day of year, hour]``.

    Years since the reference = fractional_year(date) - fractional_year(reference), computed as
    (year difference) + (doy difference) / 365.25 in float64 so that float32 rounding of years
    around 2020 (1e-4 year) does not leak into the offset. Hours are not in the metadata: 0.
    Padding dates give zero rows.
    """
    dates = np.asarray(dates)
    years, doy = year_and_doy(dates)
    valid = dates != PAD_DATE
    out = np.zeros((dates.shape[0], 3), dtype=np.float32)
    if reference is not None and reference != PAD_DATE:
        ref_year, ref_doy = year_and_doy(np.array([reference]))
        offset = (years.astype(np.float64) - ref_year[0]) + (doy.astype(np.float64) - ref_doy[0]) / 365.25
        out[:, 0] = np.where(valid, offset, 0.0)
    out[:, 1] = np.where(valid, doy, 0.0)
    return out


def check_finite(values: np.ndarray, modality: str, patch_id: str | None, path: str | None = None) -> None:
    """Raise DataError if ``values`` hold NaN or inf (one cheap reduction in the common case)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):
            return
    bad = ~np.isfinite(values)
    if not bad.any():  # the sum overflowed, the values are fine
        return
    raise DataError(
        f"{modality}: {int(bad.sum())} non-finite values (NaN/inf) after scaling",
        patch_id=patch_id,
        path=path,
    )


def reference_date(sample: Sample, config: PreprocessConfig) -> int | None:
    """The time origin: the reference modality's date if present, else the earliest input date."""
    dates = sample.get(DATES) or {}
    ref = dates.get(config.reference_modality)
    if ref is not None:
        ref = np.asarray(ref).reshape(-1)
        ref = ref[ref != PAD_DATE]
        if ref.size:
            return int(ref.min())
    candidates = [np.asarray(dates[k]).reshape(-1) for k in config.modalities if k in dates]
    valid = [d[d != PAD_DATE] for d in candidates]
    valid = [d for d in valid if d.size]
    return int(min(d.min() for d in valid)) if valid else None


# --------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------


def _raster_path(meta: Mapping[str, Any], modality: str) -> str | None:
    rasters = meta.get("rasters") if isinstance(meta, Mapping) else None
    info = rasters.get(modality) if isinstance(rasters, Mapping) else None
    return info.get("path") if isinstance(info, Mapping) else None


def _as_series(raw: Any, entry: Modality, patch_id: str | None, path: str | None) -> np.ndarray:
    """Raw raster as (T, C_disk, H, W), validating rank and band count."""
    array = np.asarray(raw)
    if array.ndim == 3 and not entry.temporal:
        array = rearrange(array, "c h w -> 1 c h w")
    if array.ndim != 4:
        expected = "(T, C, H, W)" if entry.temporal else "(C, H, W)"
        raise DataError(f"{entry.key}: expected a {expected} raster, got shape {array.shape}", patch_id=patch_id, path=path)
    if array.shape[1] != entry.num_bands:
        raise DataError(
            f"{entry.key}: expected {entry.num_bands} bands {entry.bands} per date, got shape {array.shape}",
            patch_id=patch_id,
            path=path,
        )
    if not entry.temporal and array.shape[0] != 1:
        raise DataError(f"{entry.key} is mono-temporal but has {array.shape[0]} dates", patch_id=patch_id, path=path)
    return array


def _series_dates(sample: Sample, entry: Modality, length: int, reference: int | None, patch_id: str | None) -> np.ndarray:
    """The (T,) dates of a raster, validated against its length."""
    dates = (sample.get(DATES) or {}).get(entry.key)
    if dates is None:
        if entry.dates_table is not None:
            raise DataError(f"{entry.key}: no acquisition dates in the sample", patch_id=patch_id)
        # No dates table (dem, historical imagery): the raster is dated at the reference date.
        return np.full(length, reference if reference is not None else PAD_DATE, dtype=np.int32)
    dates = np.asarray(dates).reshape(-1)
    if dates.shape[0] != length:
        raise DataError(f"{entry.key}: {dates.shape[0]} dates for a raster of {length} dates", patch_id=patch_id)
    if (dates == PAD_DATE).any():
        raise DataError(f"{entry.key}: zero (missing) acquisition date in {dates.tolist()}", patch_id=patch_id)
    months, days = (dates // 100) % 100, dates % 100
    if ((months < 1) | (months > 12) | (days < 1) | (days > 31)).any():
        raise DataError(f"{entry.key}: dates are not YYYYMMDD: {dates.tolist()}", patch_id=patch_id)
    return dates.astype(np.int32, copy=False)


def _flags_for(
    sample: Sample, entry: Modality, config: PreprocessConfig, shape: tuple[int, ...], patch_id: str | None
) -> np.ndarray | None:
    """(T, H, W) flagged pixels from the image's companion mask, or None when not applicable."""
    if not config.cloud_avoidance:
        return None
    companion = mask_companion(entry.key)
    if companion is None:
        return None
    if companion.key not in sample:
        raise DataError(
            f"{entry.key}: cloud avoidance needs its mask {companion.key!r}, absent from the sample "
            "(load it with the image, or set cloud_avoidance: false)",
            patch_id=patch_id,
        )
    mask = np.asarray(sample[companion.key])
    expected = (shape[0], companion.num_bands, *shape[2:])
    if mask.shape != expected:
        raise DataError(
            f"{companion.key}: shape {mask.shape} does not match its image {entry.key} (expected {expected})",
            patch_id=patch_id,
            path=_raster_path(sample.get(META) or {}, companion.key),
        )
    return flagged_pixels(mask, config.cloud_threshold)


def preprocess_input(
    sample: Sample,
    spec: InputSpec,
    config: PreprocessConfig,
    *,
    rng: np.random.Generator | None,
    reference: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One input modality -> (values float32 (T, C, H, W), times float32 (T, 3), valid bool (T,))."""
    entry = spec.entry
    meta = sample.get(META) or {}
    patch_id = meta.get("patch_id") if isinstance(meta, Mapping) else None
    path = _raster_path(meta, entry.key)
    if entry.key not in sample:
        raise DataError(f"input modality {entry.key!r} is missing from the sample", patch_id=patch_id)
    raw = _as_series(sample[entry.key], entry, patch_id, path)
    dates = _series_dates(sample, entry, raw.shape[0], reference, patch_id)

    flagged = _flags_for(sample, entry, config, raw.shape, patch_id) if entry.temporal else None
    if raw.shape[0] > 1 and (dates[1:] < dates[:-1]).any():
        # Bins must be contiguous in time: put the series in chronological order first.
        logger.debug("%s %s: dates not in chronological order, sorting", patch_id, entry.key)
        order = np.argsort(dates, kind="stable")
        raw, dates = raw[order], dates[order]
        flagged = None if flagged is None else flagged[order]
    values = scale_inplace(select_bands(raw, spec.band_indices), entry, spec.bands or ())
    if spec.num_dates is not None and values.shape[0] > spec.num_dates:
        keep = select_dates(values, spec.num_dates, rng=rng, flagged=flagged, eval_offset=config.eval_offset)
        values, dates = values[keep], dates[keep]

    check_finite(values, entry.key, patch_id, path)
    values, dates, valid = pad_series(values, dates, spec.num_dates)
    return values, date_times(dates, reference), valid


def _as_generator(rng: RngLike) -> np.random.Generator | None:
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def preprocess_sample(sample: Sample, config: PreprocessConfig, *, train: bool, rng: RngLike = None) -> Sample:
    """Raw sample -> model sample (see :mod:`maestro.sample`).

    ``train=True`` draws bin offsets and dates from ``rng`` (a Generator or a seed, required so
    that training randomness is reproducible); ``train=False`` is deterministic and ignores it.
    """
    generator = _as_generator(rng) if train else None
    if train and generator is None:
        raise ValueError("training preprocessing needs rng (a numpy Generator or an int seed)")
    reference = reference_date(sample, config)
    inputs, times, valid = {}, {}, {}
    for spec in config.inputs:
        inputs[spec.modality], times[spec.modality], valid[spec.modality] = preprocess_input(
            sample, spec, config, rng=generator, reference=reference
        )
    labels = {
        key: np.asarray(sample[key])  # on-disk uint8: widened on the device, not in workers
        for key, entry in MODALITIES.items()
        if entry.kind == "label" and key in sample
    }
    return {INPUTS: inputs, TIMES: times, VALID: valid, LABELS: labels, META: sample.get(META, {})}


class MaestroTransform:
    """Callable raw sample -> model sample, for datasets, webdataset ``.map`` and data loaders.

    In training, randomness comes from ``rng`` when given per call (Generator or seed); otherwise
    from an internal generator re-seeded in every process / data-loader worker from ``seed`` and
    the torch worker seed (which differs per worker and per epoch and follows
    ``torch.manual_seed``), so forked workers never replay the same dates.
    """

    def __init__(self, config: PreprocessConfig, *, train: bool, seed: int | None = None):
        self.config = config
        self.train = train
        self.seed = seed
        self._owner_pid = os.getpid()
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int | None] | None = None

    def _generator(self) -> np.random.Generator:
        """This process's generator, (re)seeded on first use in every worker."""
        worker_seed = None
        try:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            worker_seed = None if info is None else int(info.seed)
        except ImportError:  # pragma: no cover - torch is a dependency; keep numpy-only use working
            pass
        key = (os.getpid(), worker_seed)
        if self._rng is None or self._rng_key != key:
            entropy = [] if self.seed is None else [self.seed]
            if worker_seed is not None:
                entropy.append(worker_seed)
            elif os.getpid() != self._owner_pid:  # forked outside torch: at least be distinct
                entropy.append(os.getpid())
            self._rng = np.random.default_rng(entropy or None)
            self._rng_key = key
        return self._rng

    def __call__(self, sample: Sample, rng: RngLike = None) -> Sample:
        if not self.train:
            return preprocess_sample(sample, self.config, train=False)
        return preprocess_sample(sample, self.config, train=True, rng=rng if rng is not None else self._generator())

    def __repr__(self) -> str:
        return f"MaestroTransform(train={self.train}, seed={self.seed}, inputs={self.config.modalities})"
