"""FLAIR #2's baselines as data: published scores, parameter counts and the loss class weights.

Scores: test mIoU of the IGNF/FLAIR-2 repository's baseline table (README, "Leaderboard"),
from Garioud et al., "FLAIR #2: textural and temporal information for semantic segmentation from
multi-source optical imagery" (arXiv 2305.14467). No parameter count for either model was found in
the sources available when this was written (``params_m`` is None): the comparison is made with the
reference implementation instead (:data:`REFERENCE_PARAMETERS`, counted by building IGNF/FLAIR-2's
``TimeTexture_flair`` and smp U-Net with the challenge config, random weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maestro.data.flair2 import nomenclature
from maestro.models.flair2.config import UNetConfig, UTTConfig
from maestro.models.flair2.unet import AerialUNet
from maestro.models.flair2.utt import UTT


@dataclass(frozen=True)
class PaperBaseline:
    """One row of the FLAIR #2 baseline table."""

    key: str
    model: str
    """``unet`` or ``utt``."""
    inputs: tuple[str, ...]
    miou: float
    """Test mIoU, percent."""
    extras: tuple[str, ...] = ()
    """Training additions of the row: aerial metadata, augmentation, cloud filter, monthly averages."""
    params_m: float | None = None
    """Millions of parameters as published; None: no published figure found."""


_ROWS = (
    PaperBaseline("U-Net", "unet", ("aerial",), 54.70),
    PaperBaseline("U-Net+", "unet", ("aerial",), 55.93, ("metadata", "augmentation")),
    PaperBaseline("U-T&T", "utt", ("aerial", "s2"), 55.94),
    PaperBaseline(
        "U-T&T+", "utt", ("aerial", "s2"), 57.58, ("cloud filter", "monthly averages", "augmentation")
    ),
)
PAPER_BASELINES: dict[str, PaperBaseline] = {row.key: row for row in _ROWS}

REFERENCE_PARAMETERS = {"unet": 24_444_381, "utt": 27_254_744, "utt_metadata": 27_260_296}
"""Parameters of the reference implementation (challenge config: 5 aerial bands, 13 classes, U-TAE
widths 64/64/128/128), without and with its aerial-metadata MLP."""

REFERENCE_ONLY = {"utae_out_conv": 22_311, "input_level_fusion": 325 + 4_256}
"""Reference parameters this suite does not build: the U-TAE's output convolutions (their scores
are computed and discarded) and the two fusion modules of the input "level", which smp's decoder
never reads (a 1x1 conv and an MLP to 5 channels). Together 26,892, 0.1 % of U-T&T."""

PARAMETER_TOLERANCE = 0.001
"""Relative difference allowed between our counts and :data:`REFERENCE_PARAMETERS`: the modules of
:data:`REFERENCE_ONLY` and nothing more."""

CLASS_WEIGHTS = {"aerial": nomenclature.CLASS_WEIGHTS, "s2": nomenclature.S2_CLASS_WEIGHTS}
"""Per-class loss weights of the challenge config for the 13 classes (building ... plowed land,
other): ``other`` counts for neither branch, ``plowed land`` not for the U-TAE's auxiliary loss.
The nomenclature's (:mod:`maestro.data.flair2.nomenclature`), which fine-tuning reads."""


def count_parameters(config: UNetConfig | UTTConfig) -> int:
    """Parameters of the network ``config`` describes, built on the meta device (no memory, no download)."""
    if isinstance(config, UNetConfig):
        config = config.replace(encoder_weights=None)
    else:
        config = config.replace(unet=config.unet.replace(encoder_weights=None))
    with torch.device("meta"):
        model: nn.Module = AerialUNet(config) if isinstance(config, UNetConfig) else UTT(config)
    return sum(parameter.numel() for parameter in model.parameters())
