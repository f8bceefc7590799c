"""Python entry point for cloud removal: restore cloudy Sentinel-2 pixels of patches or shards.

    from maestro.api import load_gapfill

    model = load_gapfill("runs/gapfill")            # a gapfill run, a model folder or hf:org/name
    for batch in model.loader("example/shards", split="test"):
        restored = model.restore(batch)             # reflectance, cloudy pixels restored
        restored.series, restored.replaced

The preprocessing (every input of the MAE, the target's per-pixel cloud flags, dates drawn
without cloud avoidance) comes from the model's own config, as for :func:`maestro.api.load_encoder`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import MaestroTransform
from maestro.hub.pretrained import build
from maestro.hub.weights import Pick
from maestro.modalities import with_companions
from maestro.models.gapfill import FilledSeries, MaestroGapFill, fill_series, to_reflectance
from maestro.models.registry import MAESTRO_GAPFILL
from maestro.models.zoo import load_weights
from maestro.sample import FLAGS, Sample
from maestro.training.data import preprocess_for
from shards.loader import ShardLoader, make_loader

log = logging.getLogger(__name__)

__all__ = ["LoadedGapFill", "load_gapfill"]


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


def load_gapfill(
    source: str | Path, weights: Pick = "ema", device: str | torch.device = "cpu"
) -> LoadedGapFill:
    """The cloud-removal network of a ``gapfill`` run (its ``best.ckpt``), a checkpoint, a model
    folder or a Hub model, in eval mode on ``device``, with its preprocessing."""
    loaded = load_weights(source, MAESTRO_GAPFILL, weights, user="load_gapfill")
    model = build(loaded, hint="").to(device)
    log.info("loaded %s", loaded.note)
    config = model.config
    preprocess = preprocess_for(
        config.mae.encoder.specs,
        keep_flags=(config.target,),
        cloud_avoidance=False,
        cloud_threshold=config.cloud_threshold,
    )
    return LoadedGapFill(model, MaestroTransform(preprocess, train=False), loaded.note)
