"""What head configs choose and check, without torch: date poolings, pool heads, pyramid depth, grid.

Configs (:mod:`maestro.models.segmenter_config`, the fine-tuning config) and the head registry
validate against these values at every command's start-up, before any network is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from maestro.models.config import ModalitySpec

DatePooling = Literal["attentive", "mean"]
DATE_POOLINGS: tuple[str, ...] = ("attentive", "mean")
POOL_HEADS = 8
"""Attention heads of every attentive pool (the MAESTRO paper's head)."""
PYRAMID_LEVELS = 4
"""Encoder depths the UPerFuse head reads (one pyramid level each)."""


def reference_grid(specs: Mapping[str, ModalitySpec]) -> int:
    """Side of the finest token grid among the inputs: heads work at this resolution (aerial 32)."""
    return max(spec.grid for spec in specs.values())
