"""The segmentation tasks (FLAIR-HUB's ``lc`` / ``lpis``, FLAIR #2's ``flair2``, a user's ``custom``): which label raster,
which band, which classes.

One frozen row per task in :data:`TASKS` (like the modality registry); :func:`get_task` looks one
up and :meth:`SegmentationTask.target` resolves a nomenclature level into a :class:`LabelTarget`,
which turns on-disk label values into training targets: scored classes keep their value,
ignored values (LC 15..18, LPIS "mixed crops") become :data:`~maestro.labels.IGNORE_INDEX`, and a
value outside the nomenclature is a data error naming the patch, never a silent class.

Class predictions are taken with :func:`predicted_classes` (or :meth:`LabelTarget.classes`)
wherever logits become classes (validation, test, metrics, figures, ``predict``): an ignored
class that has an output channel (LPIS "mixed crops" lies inside the class range) is masked out
of the argmax, so it is never predicted, whatever its raw logit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from maestro.errors import ConfigError, DataError
from maestro.labels import IGNORE_INDEX, LABEL_SETS, LabelLevel, LabelSet
from maestro.modalities import MODALITIES

if TYPE_CHECKING:  # tensor methods only at run time: the commands read this registry before torch loads
    import torch
    from torch import Tensor


def mask_ignored(logits: Tensor, ignored: Collection[int], dim: int = 1) -> Tensor:
    """``logits`` with the channels of ``ignored`` classes (along ``dim``) at -inf: never the
    argmax, probability 0 after a softmax. The input is left as it is (masking makes a copy)."""
    if not ignored:
        return logits
    masked = logits.clone()
    for channel in ignored:
        masked.select(dim, channel).fill_(float("-inf"))
    return masked


def predicted_classes(logits: Tensor, ignored: Collection[int], dim: int = 1) -> Tensor:
    """Class indices from ``logits``: the argmax over ``dim`` among the classes not ``ignored``."""
    return mask_ignored(logits, ignored, dim).argmax(dim)


@dataclass(frozen=True)
class LabelTarget:
    """One nomenclature level of one label raster, ready to score against."""

    task: str
    level: int
    label_modality: str
    band: int
    """Band of the label raster that holds this level (LPIS: band k = level k)."""
    nomenclature: LabelLevel

    @property
    def names(self) -> tuple[str, ...]:
        return self.nomenclature.names

    @property
    def num_classes(self) -> int:
        """Output channels of a head: the largest scored value + 1."""
        return self.nomenclature.num_classes

    @property
    def evaluated(self) -> list[int]:
        return self.nomenclature.evaluated

    @property
    def ignored_channels(self) -> tuple[int, ...]:
        """Output channels of ignored classes: never predicted (:func:`predicted_classes`)."""
        return self.nomenclature.ignored_channels

    def classes(self, logits: Tensor, dim: int = 1) -> Tensor:
        """``(B, K, H, W)`` logits -> ``(B, H, W)`` predicted classes, ignored classes excluded."""
        return predicted_classes(logits, self.ignored_channels, dim)

    @cached_property
    def lookup(self) -> np.ndarray:
        """uint8 raw value -> target (int64); ignored values -> IGNORE_INDEX, unknown -> -1."""
        table = np.full(256, -1, dtype=np.int64)
        for value in range(self.nomenclature.num_values):
            table[value] = IGNORE_INDEX if value in self.nomenclature.ignored else value
        return table

    def check(self, raw: np.ndarray, patch_id: str | None = None) -> None:
        """Raise a DataError if the label band holds a value outside the nomenclature."""
        if raw.ndim != 3 or raw.shape[0] <= self.band:
            raise DataError(
                f"{self.label_modality}: expected a (bands, H, W) label with band {self.band + 1} for "
                f"{self.task} level {self.level}, got shape {tuple(raw.shape)}",
                patch_id=patch_id,
            )
        band = raw[self.band]
        largest = int(band.max()) if band.size else 0
        if largest >= self.nomenclature.num_values or (band.size and int(band.min()) < 0):
            bad = sorted({int(v) for v in np.unique(band) if not 0 <= v < self.nomenclature.num_values})
            raise DataError(
                f"{self.label_modality} band {self.band + 1}: values {bad[:10]} are outside the {self.task} "
                f"level-{self.level} nomenclature 0..{self.nomenclature.num_values - 1}",
                patch_id=patch_id,
            )

    def targets(self, labels: Tensor) -> Tensor:
        """``(B, bands, H, W)`` on-disk labels (uint8, any device) -> ``(B, H, W)`` int64 targets.

        Values were checked in the data workers (:meth:`check`); here only the table lookup runs,
        without a host sync.
        """
        values = labels[:, self.band].long()
        return self._table(values)[values]

    def _table(self, like: Tensor) -> Tensor:
        """The lookup table as an int64 tensor on the device of ``like`` (int64), copied there once
        (not on every step)."""
        tables: dict[torch.device, Tensor] = self.__dict__.setdefault("_tables", {})
        if like.device not in tables:
            tables[like.device] = like.new_tensor(self.lookup)
        return tables[like.device]


@dataclass(frozen=True)
class SegmentationTask:
    """A segmentation task: a label raster of the registry and its levels."""

    key: str
    label_modality: str
    """Registry key of the label raster (kind ``label``)."""
    description: str

    @property
    def user_classes(self) -> bool:
        """Whether the classes come from the user (a custom dataset's nomenclature YAML) rather
        than from :data:`~maestro.labels.LABEL_SETS`."""
        return MODALITIES[self.label_modality].label_set is None

    @property
    def label_set(self) -> LabelSet:
        return LABEL_SETS[MODALITIES[self.label_modality].label_set]

    @property
    def levels(self) -> tuple[int, ...]:
        return (1,) if self.user_classes else tuple(range(1, len(self.label_set.levels) + 1))

    def target(self, level: int = 1, classes: LabelLevel | None = None) -> LabelTarget:
        """The scoring target of ``level``; a level the nomenclature lacks is a ConfigError.

        ``classes`` is the user's nomenclature, required by (and only by) a task whose label has
        no label set of its own (``custom``)."""
        if level not in self.levels:
            raise ConfigError(f"task {self.key!r} has level(s) {list(self.levels)}, not {level}")
        if self.user_classes != (classes is not None):
            raise ConfigError(
                f"task {self.key!r} takes its classes from the dataset's nomenclature YAML "
                "(finetune --data-config)"
                if self.user_classes
                else f"task {self.key!r} has its own classes; a nomenclature is only for the custom task"
            )
        band = level - 1 if MODALITIES[self.label_modality].num_bands > 1 else 0
        nomenclature = classes if classes is not None else self.label_set.level(level)
        return LabelTarget(self.key, level, self.label_modality, band, nomenclature)


TASKS: dict[str, SegmentationTask] = {
    task.key: task
    for task in (
        SegmentationTask("lc", "lc", "land cover (COSIA), 15 scored classes"),
        SegmentationTask("lpis", "lpis", "crop type (LPIS), levels 1/2/3 with 23/31/46 classes"),
        SegmentationTask("flair2", "flair2", "FLAIR #2's 13 classes (12 scored, 'other' ignored)"),
        SegmentationTask("custom", "label", "your own classes, from a custom dataset's nomenclature YAML"),
    )
}


def get_task(key: str) -> SegmentationTask:
    """Registry lookup with an error that lists the valid keys."""
    try:
        return TASKS[key]
    except KeyError:
        raise ConfigError(f"unknown task {key!r}; tasks are {sorted(TASKS)}") from None


class CheckedLabels:
    """Wraps a sample transform so that every sample's labels are checked in the loader workers.

    A label value outside the nomenclature stops the run with the patch named, instead of
    becoming a silent extra class (or an index error on the GPU).
    """

    def __init__(self, transform: Any, target: LabelTarget):
        self.transform = transform
        self.target = target

    def __call__(self, sample: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        out = self.transform(sample, *args, **kwargs)
        meta = out.get("meta") or {}
        patch_id = meta.get("patch_id") if isinstance(meta, Mapping) else None
        labels = out.get("labels") or {}
        if self.target.label_modality not in labels:
            raise DataError(
                f"the {self.target.task} task needs label {self.target.label_modality!r}, absent from "
                f"this sample (labels: {sorted(labels)})",
                patch_id=patch_id,
            )
        self.target.check(np.asarray(labels[self.target.label_modality]), patch_id)
        return out
