"""MAESTRO preprocessing: raw sample (as the reader returns it) -> model sample.

Both contracts are documented in :mod:`maestro.sample`; the method is described in
``docs/method.md``. Every per-modality fact comes from the registry:

1. band selection / reordering into network order (``Modality.band_indices``), cast to float32;
2. MAESTRO scaling (``Modality.scaling``), applied in place on the float32 copy (or reading the
   raw raster once when its bands are already in network order); in training the dates are kept
   first (step 3 does not look at pixel values there), so only kept dates are converted;
3. for time series, reduction to ``num_dates`` dates, one per bin, avoiding dates flagged by the
   image's companion mask (:mod:`maestro.data.preprocess.dates`);
4. series shorter than ``num_dates`` are padded with zeros and ``valid=False``; with
   ``cloudy_date_fraction``, kept dates flagged on more of their pixels are invalid too;
5. ``times`` rows ``[years since the reference date, day of year, hour]`` with the reference date
   being the aerial date (``PreprocessConfig.reference_modality``) or the sample's earliest date.

Raw rasters are validated on the way (rank, band count, dates, companion mask, finite values):
a bad sample raises a :class:`~maestro.errors.DataError` naming the patch and the file. With
``nan_policy: fill`` non-finite values are not an error: their pixels count as flagged in date
selection, and :func:`fill_non_finite` zeroes them and invalidates dates that are mostly
non-finite.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from einops import rearrange

from maestro.data.preprocess.config import PreprocessConfig, ResolvedInput
from maestro.data.preprocess.dates import date_times, pad_series, reference_date, select_dates
from maestro.dates import PAD_DATE
from maestro.errors import DataError
from maestro.modalities import MODALITIES, Modality
from maestro.sample import DATES, FLAGS, INPUTS, LABELS, META, TIMES, VALID, Sample

logger = logging.getLogger(__name__)

RngLike = np.random.Generator | int | None


# --------------------------------------------------------------------------------------------
# Small reusable steps
# --------------------------------------------------------------------------------------------


def select_bands(
    raw: np.ndarray, band_indices: Sequence[int], dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """(T, C_disk, H, W) raster -> new (T, C, H, W) array of ``dtype`` in the given band order.

    One allocation and one casting pass per band: the 512 px rasters are never copied twice.
    """
    out = np.empty((raw.shape[0], len(band_indices), *raw.shape[2:]), dtype=dtype)
    for position, index in enumerate(band_indices):
        out[:, position] = raw[:, index]
    return out


def scale_inplace(values: np.ndarray, modality: Modality, bands: tuple[str, ...]) -> np.ndarray:
    """Apply the registry scaling of ``modality`` to ``values`` (``..., C, H, W``).

    The registry's scalings work in place on writable float32 arrays, so the rasters are not copied
    again; any other array is read once into a new float32 result.
    """
    if modality.scaling is None:
        return values
    return modality.scaling(values, bands)


def network_values(raw: np.ndarray, spec: ResolvedInput, unscaled: bool, *, shared: bool) -> np.ndarray:
    """(T, C_disk, H, W) raster -> (T, C, H, W) values: float32 scaled in network band order, or
    with ``unscaled`` the on-disk dtype, in as few passes over the pixels as possible.

    Unscaled values that keep every band are ``raw`` itself, in disk order when
    ``spec.device_band_order`` says the device reorders them. With every band in disk order the
    registry scaling reads ``raw`` once into its float32 result (no copy first). ``shared`` says
    that ``raw`` is the caller's raw array: values that alias it are returned read-only, so neither
    side can change the other.
    """
    entry = spec.entry
    in_disk_order = spec.band_indices == tuple(range(raw.shape[1]))
    if unscaled and (in_disk_order or spec.device_band_order is not None):
        return _read_only(raw) if shared else raw
    if unscaled:
        return select_bands(raw, spec.band_indices, dtype=raw.dtype)
    if in_disk_order and entry.scaling is not None:
        return scale_inplace(_read_only(raw) if shared else raw, entry, spec.bands)
    return scale_inplace(select_bands(raw, spec.band_indices), entry, spec.bands)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: values that alias the caller's raw array can then change neither side."""
    view = array.view()
    view.flags.writeable = False
    return view


def mask_companion(modality: str) -> Modality | None:
    """The mask modality whose ``companion_of`` is ``modality`` (``s2`` -> ``s2_mask``), if any."""
    for entry in MODALITIES.values():
        if entry.kind == "mask" and entry.companion_of == modality:
            return entry
    return None


def flagged_pixels(mask: np.ndarray, threshold: float) -> np.ndarray:
    """(T, C_mask, H, W) mask -> (T, H, W) bool: any mask band (snow, cloud) above ``threshold``."""
    return (np.asarray(mask) > threshold).any(axis=1)


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


def fill_non_finite(values: np.ndarray, invalid_fraction: float) -> np.ndarray:
    """Set NaN / inf in (T, C, H, W) ``values`` to 0 in place; returns (T,) bool, False for dates
    whose non-finite share exceeds ``invalid_fraction`` (those dates are zeroed entirely)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):  # the common case: one cheap reduction
            return np.ones(len(values), dtype=bool)
    bad = ~np.isfinite(values)
    share = bad.reshape(len(values), -1).mean(axis=1) if values.size else np.zeros(len(values))
    keep = share <= invalid_fraction
    values[bad] = 0.0
    values[~keep] = 0.0
    return keep


# --------------------------------------------------------------------------------------------
# Raw raster validation
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
        raise DataError(
            f"{entry.key}: expected a {expected} raster, got shape {array.shape}",
            patch_id=patch_id,
            path=path,
        )
    if array.shape[1] != entry.num_bands:
        raise DataError(
            f"{entry.key}: expected {entry.num_bands} bands {entry.bands} per date, got shape {array.shape}",
            patch_id=patch_id,
            path=path,
        )
    if not entry.temporal and array.shape[0] != 1:
        raise DataError(
            f"{entry.key} is mono-temporal but has {array.shape[0]} dates", patch_id=patch_id, path=path
        )
    return array


def _series_dates(
    sample: Sample, entry: Modality, length: int, reference: int | None, patch_id: str | None
) -> np.ndarray:
    """The (T,) dates of a raster, validated against its length."""
    dates = (sample.get(DATES) or {}).get(entry.key)
    if dates is None:
        if entry.dates_table is not None:
            raise DataError(f"{entry.key}: no acquisition dates in the sample", patch_id=patch_id)
        # No dates table (dem, historical imagery): the raster is dated at the reference date.
        return np.full(length, reference if reference is not None else PAD_DATE, dtype=np.int32)
    dates = np.asarray(dates).reshape(-1)
    if dates.shape[0] != length:
        raise DataError(
            f"{entry.key}: {dates.shape[0]} dates for a raster of {length} dates", patch_id=patch_id
        )
    if (dates == PAD_DATE).any():
        raise DataError(
            f"{entry.key}: zero (missing) acquisition date in {dates.tolist()}", patch_id=patch_id
        )
    months, days = (dates // 100) % 100, dates % 100
    if ((months < 1) | (months > 12) | (days < 1) | (days > 31)).any():
        raise DataError(f"{entry.key}: dates are not YYYYMMDD: {dates.tolist()}", patch_id=patch_id)
    return dates.astype(np.int32, copy=False)


def _flags_for(
    sample: Sample, entry: Modality, config: PreprocessConfig, shape: tuple[int, ...], patch_id: str | None
) -> np.ndarray | None:
    """(T, H, W) flagged pixels from the image's companion mask, or None when not applicable (no
    cloud avoidance and no ``keep_flags`` for it, or no companion mask)."""
    if not config.cloud_avoidance and entry.key not in config.keep_flags:
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


# --------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------


def preprocess_input(
    sample: Sample,
    spec: ResolvedInput,
    config: PreprocessConfig,
    *,
    rng: np.random.Generator | None,
    reference: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One input modality -> (values (T, C, H, W), times float32 (T, 3), valid bool (T,), flags);
    values are float32 in network scale, or in their on-disk integer dtype with
    ``config.scale_on_device`` (then in disk band order when ``spec.device_band_order`` says that
    the device reorders them); flags (T, H, W) bool are the pixels its mask flags, for the series of
    ``config.keep_flags`` (else None), False on padded dates."""
    entry = spec.entry
    meta = sample.get(META) or {}
    patch_id = meta.get("patch_id") if isinstance(meta, Mapping) else None
    path = _raster_path(meta, entry.key)
    if entry.key not in sample:
        raise DataError(f"input modality {entry.key!r} is missing from the sample", patch_id=patch_id)
    raw = _as_series(sample[entry.key], entry, patch_id, path)
    dates = _series_dates(sample, entry, raw.shape[0], reference, patch_id)

    flagged = _flags_for(sample, entry, config, raw.shape, patch_id) if entry.temporal else None
    if config.nan_policy == "fill" and entry.temporal and np.issubdtype(raw.dtype, np.floating):
        holes = ~np.isfinite(raw).all(axis=1)  # date selection avoids NaN pixels like cloudy ones
        if holes.any():
            flagged = holes if flagged is None else flagged | holes
    if raw.shape[0] > 1 and (dates[1:] < dates[:-1]).any():
        # Bins must be contiguous in time: put the series in chronological order first.
        logger.debug("%s %s: dates not in chronological order, sorting", patch_id, entry.key)
        raw, dates, flagged = _take_dates(np.argsort(dates, kind="stable"), raw, dates, flagged)
    unscaled = config.scale_on_device and entry.scales_on_device
    select = spec.num_dates is not None and raw.shape[0] > spec.num_dates
    if select and rng is not None:
        # Training draws do not look at pixel values: keep the dates first, so that only those are
        # band-selected, cast and scaled (same values as selecting after scaling).
        keep = select_dates(
            raw,
            spec.num_dates,
            rng=rng,
            flagged=flagged if config.cloud_avoidance else None,
            eval_offset=config.eval_offset,  # type: ignore[arg-type]
        )
        raw, dates, flagged = _take_dates(keep, raw, dates, flagged)
        select = False
    values = network_values(raw, spec, unscaled, shared=np.may_share_memory(raw, sample[entry.key]))
    if select:
        # A uniform division leaves every date's distance to the bin median in the same order.
        order = spec.band_indices if spec.device_band_order is not None else range(values.shape[1])
        candidates = select_bands(values, order) if unscaled else values
        keep = select_dates(
            candidates,
            spec.num_dates,
            rng=None,
            flagged=flagged if config.cloud_avoidance else None,
            eval_offset=config.eval_offset,
        )
        values, dates, flagged = _take_dates(keep, values, dates, flagged)

    keep = None
    if unscaled:
        pass  # integers cannot be NaN or infinite
    elif config.nan_policy == "fill":
        keep = fill_non_finite(values, config.nan_invalid_fraction)
    else:
        check_finite(values, entry.key, patch_id, path)
    if config.cloudy_date_fraction is not None and flagged is not None and len(flagged):
        cloudy = flagged.reshape(len(flagged), -1).mean(axis=1) > config.cloudy_date_fraction
        if cloudy.any() and not values.flags.writeable:
            values = values.copy()
        values[cloudy] = 0.0
        keep = ~cloudy if keep is None else keep & ~cloudy
    length = len(values)
    values, dates, valid = pad_series(values, dates, spec.num_dates)
    if keep is not None:
        valid[: len(keep)] &= keep
    flags = None
    if entry.key in config.keep_flags:
        flags = np.zeros((len(values), *values.shape[-2:]), dtype=bool)
        if flagged is not None:
            flags[:length] = flagged
    return values, date_times(dates, reference), valid, flags


def _take_dates(
    index: np.ndarray, values: np.ndarray, dates: np.ndarray, flagged: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The dates at ``index`` of a series: its values, dates and flags (when there are flags)."""
    return values[index], dates[index], None if flagged is None else flagged[index]


def _as_generator(rng: RngLike) -> np.random.Generator | None:
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def preprocess_sample(
    sample: Sample, config: PreprocessConfig, *, train: bool, rng: RngLike = None
) -> Sample:
    """Raw sample -> model sample (see :mod:`maestro.sample`).

    ``train=True`` draws bin offsets and dates from ``rng`` (a Generator or a seed, required so
    that training randomness is reproducible); ``train=False`` is deterministic and ignores it.
    """
    generator = _as_generator(rng) if train else None
    if train and generator is None:
        raise ValueError("training preprocessing needs rng (a numpy Generator or an int seed)")
    reference = reference_date(sample, config)
    inputs, times, valid, flags = {}, {}, {}, {}
    for spec in config.inputs:
        inputs[spec.key], times[spec.key], valid[spec.key], flagged = preprocess_input(
            sample, spec, config, rng=generator, reference=reference
        )
        if flagged is not None:
            flags[spec.key] = flagged
    labels = {
        key: np.asarray(sample[key])  # on-disk uint8: widened on the device, not in workers
        for key, entry in MODALITIES.items()
        if entry.kind == "label" and key in sample
    }
    meta = sample.get(META, {})
    out = {INPUTS: inputs, TIMES: times, VALID: valid, LABELS: labels, META: meta}
    if config.keep_flags:  # and the time origin, so that restored dates can be named (dates_of_times)
        out[FLAGS] = flags
        out[META] = {**meta, "reference_date": reference}
    return out


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
        return preprocess_sample(
            sample, self.config, train=True, rng=rng if rng is not None else self._generator()
        )

    def __repr__(self) -> str:
        return (
            f"MaestroTransform(train={self.train}, seed={self.seed}, inputs={list(self.config.modalities)})"
        )
