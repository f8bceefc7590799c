"""Python entry point for cloud removal: restore cloudy Sentinel-2 pixels of patches or shards.

    from maestro.api import load_gapfill

    model = load_gapfill("runs/gapfill")            # a gapfill run, a model folder or hf:org/name
    for batch in model.loader("example/shards", split="test"):
        restored = model.restore(batch)             # reflectance, cloudy pixels restored
        restored.series, restored.replaced
    restored = model.restore_sample(sample)         # one raw sample, its whole S2 series, in DN

The preprocessing (every input of the MAE, the target's per-pixel cloud flags, dates drawn
without cloud avoidance) comes from the model's own config, as for :func:`maestro.api.load_encoder`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import MaestroTransform, PreprocessConfig, preprocess_sample
from maestro.errors import ConfigError
from maestro.evaluation.cloudy import as_stored
from maestro.hub.pretrained import build
from maestro.hub.weights import Pick
from maestro.modalities import MODALITIES, Divide, with_companions
from maestro.models.gapfill import FilledSeries, MaestroGapFill, fill_series, restore_batch, to_reflectance
from maestro.models.gapfill_config import GapFillConfig
from maestro.models.registry import MAESTRO_GAPFILL
from maestro.models.zoo import load_weights
from maestro.sample import DATES, FLAGS, Sample
from maestro.training.data import preprocess_for
from shards.loader import ShardLoader, make_loader

log = logging.getLogger(__name__)

__all__ = ["LoadedGapFill", "RestoredSeries", "gapfill_preprocessing", "load_gapfill"]


def gapfill_preprocessing(config: GapFillConfig, whole_series: bool = False) -> PreprocessConfig:
    """What a cloud-removal network reads: every input of its MAE (its bands and dates), the
    target's per-pixel flags, dates drawn without cloud avoidance (cloudy dates are what it
    restores). ``whole_series`` keeps every date of the target instead of ``num_dates``: the prior
    then sees every clear date, and :func:`~maestro.models.gapfill.restore_series` runs the network
    run by run (``predict --reconstruct``, :meth:`LoadedGapFill.restore_sample`)."""
    key = config.target
    preprocess = preprocess_for(
        config.mae.encoder.specs,
        keep_flags=(key,),
        cloud_avoidance=False,
        cloud_threshold=config.cloud_threshold,
    )
    if not whole_series:
        return preprocess
    overrides = {
        k: dataclasses.replace(v, num_dates=None) if k == key else v for k, v in preprocess.overrides.items()
    }
    return dataclasses.replace(preprocess, keep_all_dates=(key,), overrides=overrides)


@dataclass(frozen=True)
class RestoredSeries:
    """One raw sample's target series with its flagged pixels restored (:meth:`LoadedGapFill.restore_sample`)."""

    series: np.ndarray
    """``(T, C, H, W)`` as the raw sample holds it (units, dtype, band and date order): restored
    pixels rounded and clipped to an integer dtype, every other value the input's, bit for bit."""
    replaced: np.ndarray
    """``(T, H, W)`` bool: pixels whose values come from the model (flagged by the companion mask)."""


@dataclass(frozen=True)
class LoadedGapFill:
    """A trained cloud-removal network with the preprocessing it was trained with."""

    model: MaestroGapFill
    preprocess: MaestroTransform
    note: str

    @property
    def target(self) -> str:
        return self.model.config.target

    @property
    def members(self) -> list[str]:
        """What to read per patch: every input and the target's cloud mask."""
        return with_companions(list(self.model.config.mae.encoder.modalities))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def series_preprocess(self) -> PreprocessConfig:
        """The preprocessing of :meth:`restore_sample`: every date of the target kept."""
        return gapfill_preprocessing(self.model.config, whole_series=True)

    def batch(self, samples: Iterable[Sample]) -> dict[str, Any]:
        """Raw samples (a reader's items, decoded shard samples) -> one preprocessed batch."""
        return collate_model_samples([self.preprocess(sample) for sample in samples])

    def loader(
        self,
        shards: str | Path,
        split: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        **options: Any,
    ) -> ShardLoader:
        """Preprocessed batches of shards, every sample once (``options``: :func:`make_loader`'s)."""
        return make_loader(
            shards,
            preprocess=self.preprocess,
            mode="eval",
            split=split,
            batch_size=batch_size,
            num_workers=num_workers,
            modalities=tuple(self.members),
            **options,
        )

    @torch.no_grad()
    def restore(self, batch: Mapping[str, Any], held_out: torch.Tensor | None = None) -> FilledSeries:
        """The target series of ``batch`` with its flagged (and ``held_out``) pixels restored, in
        reflectance (every other value as it came in)."""
        device, key = self.device, self.target
        inputs, times, valid = (
            {k: v.to(device) for k, v in batch[part].items()} for part in ("inputs", "times", "valid")
        )
        flags = batch[FLAGS][key].to(device)
        held = held_out.to(device) if held_out is not None else None
        filled = fill_series(self.model, inputs, times, valid, flags, held)
        scale = to_reflectance(key)
        return dataclasses.replace(
            filled,
            series=filled.series * scale,
            prediction=filled.prediction * scale,
            prior=filled.prior * scale,
        )

    def restore_sample(self, sample: Sample) -> RestoredSeries:
        """A raw sample (a reader's item, a decoded shard sample) -> its whole target series with the
        flagged pixels restored, in the sample's own units, dtype, band and date order
        (:meth:`restore_samples` of one sample)."""
        return self.restore_samples([sample])[0]

    @torch.no_grad()
    def restore_samples(self, samples: Sequence[Sample]) -> list[RestoredSeries]:
        """Raw samples -> their whole target series with the flagged pixels restored, each in its
        own units, dtype, band and date order, restored as one batch (series of different lengths
        are padded, and padding is never restored or seen).

        The preprocessing puts dates in chronological order and bands in network order; each result
        is taken back to its sample's. The model must read every band of the target (the others
        could not be restored): a ConfigError otherwise."""
        key, config = self.target, self.series_preprocess
        spec, entry = config.spec(key), MODALITIES[key]
        if sorted(spec.band_indices) != list(range(entry.num_bands)) or not isinstance(entry.scaling, Divide):
            raise ConfigError(
                f"restore_sample gives back the whole {key} series: the model reads bands {list(spec.bands)} "
                f"of {list(entry.bands)}, scaled by {entry.scaling!r}"
            )
        if not samples:
            return []
        batch = collate_model_samples([preprocess_sample(sample, config, train=False) for sample in samples])
        restored, replaced = restore_batch(self.model, batch)
        restored, replaced = restored.double().cpu().numpy(), replaced.cpu().numpy()
        return [
            _in_sample_order(
                sample[key], sample[DATES][key], values, flags, spec.band_indices, entry.scaling.factor
            )
            for sample, values, flags in zip(samples, restored, replaced, strict=True)
        ]


def _in_sample_order(
    raw: np.ndarray,
    dates: np.ndarray,
    values: np.ndarray,
    flags: np.ndarray,
    band_indices: Sequence[int],
    factor: float,
) -> RestoredSeries:
    """One sample's restoration (network units, chronological, padded to the batch's dates) back in
    the raw sample's dates, bands, units and dtype; only restored pixels differ from ``raw``."""
    raw = np.asarray(raw)
    length = len(raw)
    back = np.argsort(np.argsort(np.asarray(dates).reshape(-1), kind="stable"))
    values, replaced = values[:length][back] * factor, flags[:length][back]
    disk = np.empty_like(values)
    disk[:, list(band_indices)] = values
    series = np.where(rearrange(replaced, "t h w -> t 1 h w"), as_stored(disk, raw.dtype), raw)
    return RestoredSeries(series, replaced)


def load_gapfill(
    source: str | Path, weights: Pick = "ema", device: str | torch.device = "cpu"
) -> LoadedGapFill:
    """The cloud-removal network of a ``gapfill`` run (its ``best.ckpt``), a checkpoint, a model
    folder or a Hub model, in eval mode on ``device``, with its preprocessing."""
    loaded = load_weights(source, MAESTRO_GAPFILL, weights, user="load_gapfill")
    model = build(loaded, hint="").to(device)
    log.info("loaded %s", loaded.note)
    preprocess = gapfill_preprocessing(model.config)
    return LoadedGapFill(model, MaestroTransform(preprocess, train=False), loaded.note)
