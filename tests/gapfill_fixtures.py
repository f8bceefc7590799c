"""A tiny cloud-removal network for the tests that restore toy samples without training one: its
correction head is drawn at random (an untrained head is zero, exactly the interpolation), so its
restorations differ from the interpolation everywhere it restores."""

from __future__ import annotations

from pathlib import Path

import torch

from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.gapfill import MaestroGapFill
from maestro.models.gapfill_config import GapFillConfig


def tiny_encoder(s2_dates: int = 4, s1_dates: int = 2) -> EncoderConfig:
    """Toy S2 and S1 (10 x 10 px) in 2 x 2 tokens, width 32, two blocks."""
    return EncoderConfig(
        modalities=("s2", "s1_asc"),
        overrides={
            "s2": {"num_dates": s2_dates, "patch_size": 5},
            "s1_asc": {"num_dates": s1_dates, "patch_size": 5},
        },
        size="tiny",
        width=32,
        depth=2,
        inter_depth=1,
        grid_size=4,
    )


ENCODER = tiny_encoder()
"""Toy S2 and S1 (10 x 10 px) in 2 x 2 tokens; 4 S2 dates a run, so a toy series takes several."""


def tiny_gapfill(seed: int = 0) -> MaestroGapFill:
    torch.manual_seed(seed)
    model = MaestroGapFill(
        GapFillConfig(MAEConfig(ENCODER, decoder_width=16, decoder_heads=2, decoder_depth=1))
    )
    for linear in model.correction.groups:
        torch.nn.init.normal_(linear.weight, std=0.05)
        torch.nn.init.normal_(linear.bias, std=0.05)
    return model.eval()


def save_tiny_gapfill(folder: Path, seed: int = 0) -> Path:
    """The network as a model folder (what ``--model`` and ``load_gapfill`` take)."""
    tiny_gapfill(seed).save_pretrained(folder)
    return folder
