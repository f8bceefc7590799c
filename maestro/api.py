"""Python entry point for the common job: encode patches with a trained MAESTRO encoder.

    from maestro.api import load_encoder

    model = load_encoder("runs/pretrain")          # a run, a .ckpt, a model folder, org/name or hf:org/name
    reader = model.reader("/data/FLAIR-HUB", split="test")   # or dataset="flair2", or data_config=YAML
    features = model.encode(model.batch(reader[i] for i in range(4)))

Everything the data side needs (which modalities to read, which bands, how many dates) comes from
the loaded encoder's own config, so a 4-date model is fed 4 dates whatever the registry's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maestro.api_gapfill import LoadedGapFill, load_gapfill
from maestro.data import zoo
from maestro.data.collate import collate_model_samples
from maestro.data.flairhub import FlairHubReader
from maestro.data.preprocess import MaestroTransform
from maestro.datasets import DEFAULT_DATASET, DatasetReader, ReaderOptions
from maestro.errors import ConfigError
from maestro.hub.pretrained import build
from maestro.hub.weights import Pick
from maestro.modalities import with_companions
from maestro.models.encoder import EncoderOutput, MaestroEncoder
from maestro.models.zoo import load_encoder_weights
from maestro.sample import Sample
from maestro.training.data import preprocess_for
from shards.loader import ShardLoader, make_loader

log = logging.getLogger(__name__)

__all__ = ["LoadedEncoder", "LoadedGapFill", "load_encoder", "load_gapfill"]


@dataclass(frozen=True)
class LoadedEncoder:
    """A trained encoder with the preprocessing it was trained with."""

    encoder: MaestroEncoder
    """In eval mode, on the device it was loaded to."""
    preprocess: MaestroTransform
    """Raw sample (reader or shard) -> model sample: the encoder's bands and dates, deterministic."""
    note: str
    """Which weights were loaded, e.g. ``EMA weights of step0000120.ckpt (step 120)``."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoder.config.modalities)

    @property
    def members(self) -> list[str]:
        """What to read per patch: the inputs and the masks preprocessing uses (``s2_mask``)."""
        return with_companions(self.modalities)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def reader(
        self,
        root: str | Path | None = None,
        split: str = "test",
        dataset: str = DEFAULT_DATASET,
        data_config: str | Path | None = None,
        **options: Any,
    ) -> DatasetReader:
        """Patches of ``split`` with :attr:`members`, read by the registered reader of ``dataset``
        (a key of :data:`maestro.datasets.DATASETS`): under ``root``, or, for your own dataset
        (``custom``), where its ``data_config`` YAML says. ``options``: other
        :class:`~maestro.data.flairhub.FlairHubReader` arguments, for FLAIR-HUB."""
        if data_config is not None and dataset == DEFAULT_DATASET:
            dataset = "custom"
        if dataset == DEFAULT_DATASET:
            if root is None:
                raise ConfigError("reader: give the FLAIR-HUB root folder")
            return FlairHubReader(Path(root), self.members, split=split, **options)
        if options:
            raise ConfigError(f"reader: {sorted(options)} are FLAIR-HUB reader options, not {dataset}'s")
        config = Path(data_config) if data_config is not None else None
        if root is None and config is None:
            raise ConfigError(f"reader: give the {dataset} root folder")
        folder = Path(root) if root is not None else config.parent
        return zoo.open_reader(dataset, ReaderOptions(folder, split, tuple(self.members), data_config=config))

    def loader(
        self,
        shards: str | Path,
        split: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        **options: Any,
    ) -> ShardLoader:
        """Preprocessed batches from shards, every sample exactly once (``options``: other
        :class:`shards.loader.LoaderConfig` fields)."""
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

    def batch(self, samples: Iterable[Sample]) -> dict[str, Any]:
        """Raw samples (e.g. from :meth:`reader`) -> one preprocessed, collated batch."""
        return collate_model_samples([self.preprocess(sample) for sample in samples])

    @torch.no_grad()
    def encode(self, batch: Mapping[str, Any]) -> EncoderOutput:
        """Token maps of a batch (``tokens[modality]`` is ``(B, T, G, h, w, D)``), on the encoder's device."""
        device = self.device
        inputs, times, valid = (
            {k: v.to(device) for k, v in batch[part].items()} for part in ("inputs", "times", "valid")
        )
        return self.encoder(inputs, times, valid)


def load_encoder(
    source: str | Path, weights: Pick = "ema", device: str | torch.device = "cpu"
) -> LoadedEncoder:
    """The encoder of a ``pretrain``/``finetune`` run directory (a fine-tuning run's ``best.ckpt``,
    else the newest checkpoint), a ``.ckpt`` file, a model folder or a Hub model (``org/name`` or
    ``hf:org/name``, ``@revision`` optional), with its preprocessing.

    Training checkpoints give their EMA weights unless ``weights="model"``; :attr:`LoadedEncoder.note`
    (also logged) says which were taken.
    """
    loaded = load_encoder_weights(source, weights, user="load_encoder")
    encoder = build(loaded, hint="")
    encoder.to(device)
    log.info("loaded %s", loaded.note)
    preprocess = MaestroTransform(preprocess_for(loaded.config.specs), train=False)
    return LoadedEncoder(encoder, preprocess, loaded.note)
