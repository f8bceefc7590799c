"""Which toy patches exist: ids, splits (disjoint domains), ROIs and Lambert-93 positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maestro.data.layout import PATCH_SIZE_M, PatchId

SPLIT_DOMAINS: dict[str, tuple[str, ...]] = {
    "train": ("D001-2021", "D002-2021", "D003-2022", "D004-2022"),
    "val": ("D005-2021",),
    "test": ("D006-2022",),
}
"""Domains of each split: disjoint, as in the official domain-wise split."""

_SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}
_ROIS_PER_DOMAIN = 2
_ROI_PREFIXES = ("AA", "FF", "IW", "UN", "UU", "AB", "KD", "ZS")


@dataclass(frozen=True)
class PatchPlan:
    """One patch to simulate: its id, split, ROI (terrain seed), year and position."""

    index: int
    patch: PatchId
    split: str
    roi_index: int
    year: int
    origin: tuple[float, float]
    """(left, top) of the patch in Lambert-93 metres."""


def _split_sizes(num_patches: int) -> dict[str, int]:
    if num_patches < len(SPLIT_DOMAINS):
        raise ValueError(f"the toy dataset needs at least {len(SPLIT_DOMAINS)} patches, got {num_patches}")
    sizes = {split: max(1, round(fraction * num_patches)) for split, fraction in _SPLIT_FRACTIONS.items()}
    return {"train": num_patches - sum(sizes.values()), **sizes}


def _roi_origin(domain_index: int, roi: int) -> tuple[float, float]:
    """Top-left corner of an ROI on the 102.4 m patch grid, spread over mainland France."""
    tile_x = 3000 + 900 * domain_index + 150 * roi
    tile_y = 65500 - 700 * domain_index - 90 * roi
    return tile_x * PATCH_SIZE_M, tile_y * PATCH_SIZE_M


def plan_patches(num_patches: int) -> list[PatchPlan]:
    """Patch ids, splits and positions: each split's patches spread over its domains and ROIs."""
    plans: list[PatchPlan] = []
    domain_index = 0
    for split, size in _split_sizes(num_patches).items():
        domains = SPLIT_DOMAINS[split]
        per_domain = np.array_split(np.arange(size), len(domains))
        for domain, members in zip(domains, per_domain, strict=True):
            domain_index += 1
            for roi, roi_members in enumerate(np.array_split(members, _ROIS_PER_DOMAIN)):
                roi_name = f"{_ROI_PREFIXES[(domain_index + roi) % len(_ROI_PREFIXES)]}-S1-{roi + 1:02d}"
                columns = max(1, math.ceil(math.sqrt(len(roi_members))))
                x0, y0 = _roi_origin(domain_index, roi)
                for k in range(len(roi_members)):
                    row, col = divmod(k, columns)
                    plans.append(
                        PatchPlan(
                            index=len(plans),
                            patch=PatchId(domain, roi_name, row, col),
                            split=split,
                            roi_index=domain_index * _ROIS_PER_DOMAIN + roi,
                            year=int(domain.split("-")[1]),
                            origin=(x0 + col * PATCH_SIZE_M, y0 - row * PATCH_SIZE_M),
                        )
                    )
    return plans
