"""Conventions for one sample, shared by the reader, shards, loaders and models.

A sample is a plain dict so that webdataset, DataLoader collation and Lightning pass it through
unchanged::

    {
        "aerial": (C, H, W) array,            # mono-temporal rasters, on-disk band order
        "s2": (T, C, H, W) array,             # time series, date-major as on disk
        "s2_mask": (T, 2, H, W) array,        # snow / cloud probability per date
        "lc": (1, H, W), "lpis": (3, H, W),   # labels, one band per level
        "dates": {"s2": (T,) int32 YYYYMMDD, "aerial": (1,) ...},
        "meta": {"patch_id", "domain", "roi", "split",
                 "rasters": {modality: {"path", "crs", "transform"}}},
    }

Keys are modality keys of :mod:`maestro.modalities`, so code iterates over them instead of
naming sensors.

Preprocessing (``maestro.data.preprocess``) turns a raw sample into the *model sample* that
loaders collate and models consume (collation adds a leading batch dimension B)::

    {
        "inputs": {modality: float32 (T, C, H, W)},  # every input modality, T = 1 if mono-temporal,
                                                      # network band order, MAESTRO scaling applied
        "times":  {modality: float32 (T, 3)},        # [years since the reference (aerial) date,
                                                      #  day of year 0..365, hour of day 0..23]
        "valid":  {modality: bool (T,)},             # False where a date is padding
        "labels": {"lc": uint8 (1, H, W), "lpis": uint8 (3, H, W)},  # present labels, on-disk
                                                      # dtype (8x fewer bytes than int64 to move)
        "flags":  {"s2": bool (T, H, W)},            # only for PreprocessConfig.keep_flags: pixels
                                                      # its mask flags (cloud removal)
        "meta":   {...},                             # as above (a BatchMeta after collation)
    }
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

DATES = "dates"
META = "meta"
INPUTS = "inputs"
TIMES = "times"
VALID = "valid"
LABELS = "labels"
FLAGS = "flags"
"""Optional: per-pixel cloud / snow flags of the series named by ``PreprocessConfig.keep_flags``."""
RESERVED = frozenset({DATES, META})

Sample = dict[str, Any]


def modality_keys(sample: Sample) -> list[str]:
    """Keys of a sample that hold rasters (everything but dates and metadata)."""
    return [k for k in sample if k not in RESERVED]


class BatchMeta:
    """The ``meta`` dicts of a collated batch, one per sample, in batch order.

    Deliberately not a list, tuple or ``Sequence``: the generic walkers of a training step (the
    DataLoader's pin-memory pass, Lightning's ``apply_to_collection``, DDP's input mover in every
    forward) recurse into those, and at batch 256 the metadata holds ~20,000 small Python values
    (raster paths, CRS, transforms), tens of milliseconds of host time per walk on the critical
    path of every step. To those walkers this is one opaque value, passed by reference.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[dict[str, Any]] = ()) -> None:
        self._items = tuple(items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BatchMeta):
            return self._items == other._items
        return isinstance(other, list | tuple) and list(self._items) == list(other)

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    def __repr__(self) -> str:
        return f"BatchMeta({list(self._items)!r})"

    def __getstate__(self) -> tuple[dict[str, Any], ...]:
        return self._items

    def __setstate__(self, state: tuple[dict[str, Any], ...]) -> None:
        self._items = state
