"""FLAIR #2 nomenclature: the 19 raw mask values, the 13 baseline classes and their weights.

``MSK_*.tif`` holds values 1..19 (the full photo-interpretation nomenclature). The data paper and
the baseline train on 13 classes: values 1..12 keep their class (shifted to 0..11) and 13..19 are
grouped into one class ``other`` (12), which has weight 0 in the loss and is left out of the mIoU
(the baseline ``metrics.py`` averages the IoU of classes 0..11). Names, colours and the grouping
follow the baseline code (``notebook/data_display.py``, ``src/metrics.py``); the weights are the
config's ``weights_aerial_satellite`` (one weight for the aerial loss, one for the Sentinel-2
branch loss, where ``plowed land`` also gets 0). Checked at import so a bad edit fails loudly.
"""

from __future__ import annotations

import numpy as np

RAW_VALUES: tuple[int, ...] = tuple(range(1, 20))
RAW_NAMES: tuple[str, ...] = (
    "building",
    "pervious surface",
    "impervious surface",
    "bare soil",
    "water",
    "coniferous",
    "deciduous",
    "brushwood",
    "vineyard",
    "herbaceous vegetation",
    "agricultural land",
    "plowed land",
    "swimming pool",
    "snow",
    "clear cut",
    "mixed",
    "ligneous",
    "greenhouse",
    "other",
)
RAW_COLORS: tuple[str, ...] = (
    "#db0e9a", "#938e7b", "#f80c00", "#a97101", "#1553ae", "#194a26", "#46e483",
    "#f3a60d", "#660082", "#55ff00", "#fff30d", "#e4df7c", "#3de6eb", "#ffffff",
    "#8ab3a0", "#6b714f", "#c5dc42", "#9999ff", "#000000",
)  # fmt: skip

CLASS_NAMES: tuple[str, ...] = (*RAW_NAMES[:12], "other")
"""The 13 classes of the task, index = grouped label value."""
CLASS_COLORS: tuple[str, ...] = (*RAW_COLORS[:12], "#000000")
NUM_CLASSES = len(CLASS_NAMES)
OTHER = NUM_CLASSES - 1
IGNORED_CLASSES: tuple[int, ...] = (OTHER,)
"""Grouped values left out of the loss (weight 0) and of the mIoU, as in the paper."""

GROUPING: dict[int, int] = {raw: (raw - 1 if raw <= 12 else OTHER) for raw in RAW_VALUES}
"""Raw mask value -> grouped class (13 swimming pool .. 19 other -> 12 other)."""

CLASS_WEIGHTS: tuple[float, ...] = (1.0,) * 12 + (0.0,)
"""Loss weight per grouped class (aerial / main loss)."""
S2_CLASS_WEIGHTS: tuple[float, ...] = (1.0,) * 11 + (0.0, 0.0)
"""Loss weight per grouped class of the Sentinel-2 branch (U-T&T): plowed land and other are 0."""
METRIC = "miou"
"""The paper's score: mean IoU over the classes not in :data:`IGNORED_CLASSES`."""


def _check() -> None:
    counts = {
        "RAW_NAMES": len(RAW_NAMES),
        "RAW_COLORS": len(RAW_COLORS),
        "GROUPING": len(GROUPING),
    }
    if set(counts.values()) != {len(RAW_VALUES)}:
        raise AssertionError(
            f"FLAIR #2 raw nomenclature lengths differ: {counts} vs {len(RAW_VALUES)} values"
        )
    per_class = {
        "CLASS_NAMES": len(CLASS_NAMES),
        "CLASS_COLORS": len(CLASS_COLORS),
        "CLASS_WEIGHTS": len(CLASS_WEIGHTS),
        "S2_CLASS_WEIGHTS": len(S2_CLASS_WEIGHTS),
    }
    if set(per_class.values()) != {NUM_CLASSES} or NUM_CLASSES != 13:
        raise AssertionError(f"FLAIR #2 class table lengths differ: {per_class}")
    if sorted(set(GROUPING.values())) != list(range(NUM_CLASSES)):
        raise AssertionError("FLAIR #2 grouping does not reach every class exactly")
    if any(CLASS_WEIGHTS[c] != 0.0 for c in IGNORED_CLASSES):
        raise AssertionError("an ignored FLAIR #2 class has a non-zero weight")


_check()

_LUT = np.full(256, 255, dtype=np.uint8)
for _raw, _grouped in GROUPING.items():
    _LUT[_raw] = _grouped
INVALID = 255
"""LUT value of a byte that is not one of the 19 raw values."""


def group_labels(raw: np.ndarray) -> np.ndarray:
    """Raw uint8 mask values -> grouped classes; bytes outside 1..19 become :data:`INVALID`."""
    return _LUT[np.asarray(raw, dtype=np.uint8)]
