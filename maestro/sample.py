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
        "meta":   {...},                             # as above (a list of dicts after collation)
    }
"""

from __future__ import annotations

from typing import Any

DATES = "dates"
META = "meta"
INPUTS = "inputs"
TIMES = "times"
VALID = "valid"
LABELS = "labels"
RESERVED = frozenset({DATES, META})

Sample = dict[str, Any]


def modality_keys(sample: Sample) -> list[str]:
    """Keys of a sample that hold rasters (everything but dates and metadata)."""
    return [k for k in sample if k not in RESERVED]
