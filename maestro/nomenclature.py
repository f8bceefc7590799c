"""A user's own classes: the nomenclature YAML of a custom dataset, checked when it is loaded.

::

    classes:                       # one entry per class; values 0..N-1 are the head's channels
      - {value: 0, name: other, colour: "#d9d9d9"}
      - {value: 1, name: hedgerow, colour: "#1b7837"}
      - {value: 2, name: isolated tree, colour: "#a6dba0"}
      - {value: 3, name: forest, colour: "#00441b"}
      - {value: 4, name: unlabelled}   # colour optional: a fixed distinct one is generated
    ignored: [4]                   # left out of the loss and of the metrics, never predicted
    grouping:                      # optional: raw value in the label rasters -> class value
      11: 1
      12: 1

Without ``grouping`` the label rasters hold class values; with it they hold raw values, every one
of which must be listed (a raw value that is not is a data error naming the patch, never a silent
class). A value, name or mapping key given twice, a gap in the values or an unknown ignored value
is a :class:`~maestro.errors.ConfigError` naming the file.

The training task keeps the classes, names, colours and ignored values (:meth:`Nomenclature.level`,
and ``task.nomenclature`` of a fine-tuning run, so that published models carry their classes); the
grouping is the reader's business (:meth:`Nomenclature.group`). Loaded without torch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from maestro.config import ConfigMixin, from_dict, load_yaml
from maestro.errors import ConfigError
from maestro.labels import IGNORE_INDEX, LabelLevel, palette, rgb_of_hex

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
RAW_VALUES = 256
"""Label rasters are uint8: raw values 0..255."""


@dataclass(frozen=True)
class ClassEntry(ConfigMixin):
    value: int
    name: str
    colour: str | None = None
    """``#rrggbb``; None: a fixed colour distinct from the others."""

    def __post_init__(self) -> None:
        if not 0 <= self.value < IGNORE_INDEX:
            raise ConfigError(f"class value {self.value} must be in 0..{IGNORE_INDEX - 1}")
        if not self.name.strip():
            raise ConfigError(f"class {self.value} has an empty name")
        if self.colour is not None and not _HEX.match(self.colour):
            raise ConfigError(f"class {self.value} ({self.name}): colour {self.colour!r} is not #rrggbb")


@dataclass(frozen=True)
class Nomenclature(ConfigMixin):
    """Classes by value, the ignored ones and the optional grouping of raw label values."""

    classes: tuple[ClassEntry, ...]
    ignored: tuple[int, ...] = ()
    grouping: Mapping[int, int] | None = None
    """Raw label value -> class value (None: the rasters hold class values)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(sorted(self.classes, key=lambda entry: entry.value)))
        object.__setattr__(self, "ignored", tuple(sorted(self.ignored)))
        values = [entry.value for entry in self.classes]
        for what, items in (("value", values), ("name", [entry.name for entry in self.classes])):
            twice = sorted(item for item, count in Counter(items).items() if count > 1)
            if twice:
                raise ConfigError(f"class {what}s given more than once: {twice}")
        if len(values) < 2:
            raise ConfigError(f"a nomenclature needs at least 2 classes, got {len(values)}")
        gaps = sorted(set(range(len(values))) - set(values))
        if gaps:
            raise ConfigError(
                f"class values must be 0..{len(values) - 1} (one output channel each); {gaps} missing, "
                f"values are {values}"
            )
        unknown = sorted(set(self.ignored) - set(values))
        if unknown or len(set(self.ignored)) != len(self.ignored):
            raise ConfigError(f"ignored: {list(self.ignored)} must be distinct class values {values}")
        if len(self.ignored) >= len(values) - 1:
            raise ConfigError(f"ignored: {list(self.ignored)} leaves fewer than 2 classes to learn")
        if self.grouping is not None:
            grouping = dict(self.grouping)
            bad_raw = sorted(raw for raw in grouping if not 0 <= raw < RAW_VALUES)
            bad_class = sorted({value for value in grouping.values() if value not in values})
            if bad_raw or bad_class:
                raise ConfigError(
                    f"grouping: raw values must be 0..{RAW_VALUES - 1} (bad: {bad_raw}) and map to class "
                    f"values {values} (bad: {bad_class})"
                )
            object.__setattr__(self, "grouping", grouping)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.classes)

    def level(self) -> LabelLevel:
        """The classes as the tasks and metrics see them, with the YAML's colours."""
        bare = LabelLevel(names=self.names, ignored=frozenset(self.ignored))
        generated = palette(bare)
        colours = tuple(
            rgb_of_hex(entry.colour) if entry.colour else generated[entry.value] for entry in self.classes
        )
        return LabelLevel(names=bare.names, ignored=bare.ignored, colours=colours)

    def classes_only(self) -> Nomenclature:
        """What a trained model keeps: classes and ignored values, not how raw rasters were grouped."""
        return Nomenclature(self.classes, self.ignored)

    @cached_property
    def raw_lookup(self) -> np.ndarray:
        """uint8 raw value -> class value (int16); -1 for a raw value the nomenclature does not list."""
        table = np.full(RAW_VALUES, -1, dtype=np.int16)
        if self.grouping is None:
            table[: len(self.classes)] = np.arange(len(self.classes))
        else:
            for raw, value in self.grouping.items():
                table[raw] = value
        return table

    def group(self, raw: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Raw label values -> (uint8 class values, sorted raw values the nomenclature lacks)."""
        if raw.dtype != np.uint8:
            raise ValueError(f"label rasters are uint8, got {raw.dtype}")
        mapped = self.raw_lookup[raw]
        unknown = sorted(int(v) for v in np.unique(raw[mapped < 0])) if (mapped < 0).any() else []
        return mapped.clip(0).astype(np.uint8), unknown


def load_nomenclature(path: str | Path) -> Nomenclature:
    """Read and check a nomenclature YAML; every problem is a ConfigError naming the file."""
    raw = load_yaml(path, "nomenclature file")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"nomenclature file {path}: expected a mapping with 'classes', got {type(raw).__name__}"
        )
    try:
        return from_dict(Nomenclature, raw)
    except ConfigError as error:
        raise ConfigError(f"nomenclature file {path}: {error}") from None
