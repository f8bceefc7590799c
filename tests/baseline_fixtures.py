"""Tiny Swin-UTAE settings for CPU tests: a 1-block Swin per stage, narrow U-TAEs and decoders."""

from __future__ import annotations

from typing import Any

from maestro.modalities import MODALITIES, ModalityOverride
from maestro.models.baseline import BaselineOptions, SwinConfig, SwinUTAEConfig, UTAEConfig, baseline_config
from maestro.models.config import EncoderConfig

TINY_SWIN = SwinConfig(
    name="swin_tiny_patch4_window7_224",
    embed_dim=8,
    depths=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 1),
    window_size=4,
)
TINY_UTAE = UTAEConfig(
    encoder_widths=(8, 8, 16, 16),
    decoder_widths=(8, 8, 16, 16),
    out_widths=(8,),
    num_heads=4,
    d_model=16,
    d_k=2,
    norm_groups=2,
    dropout=0.0,
)
TINY_OPTIONS = BaselineOptions(swin=TINY_SWIN, utae=TINY_UTAE, decoder_channels=8)
TINY_SIZES = {"aerial": 32, "dem": 32, "spot": 32, "hist": 32, "s2": 4, "s1_asc": 4, "s1_des": 4}


def tiny_encoder(modalities: tuple[str, ...], dates: int = 3) -> EncoderConfig:
    """Small images (32 px single-date, 4 px series) and ``dates`` dates per series."""
    overrides = {
        key: ModalityOverride(
            image_size=TINY_SIZES[key], num_dates=dates if MODALITIES[key].temporal else None
        )
        for key in modalities
    }
    return EncoderConfig(modalities=modalities, overrides=overrides)


def tiny_config(
    modalities: tuple[str, ...], tasks: dict[str, int] | None = None, **changes: Any
) -> SwinUTAEConfig:
    fields: dict[str, Any] = {
        "swin": TINY_SWIN,
        "utae": TINY_UTAE,
        "decoder_channels": 8,
        "pretrained": False,
        "label_size": 32,
        **changes,
    }
    return SwinUTAEConfig(encoder=tiny_encoder(modalities), tasks=tasks or {"lc": 15}, **fields)


def tiny_paper_config(key: str, **changes: Any) -> SwinUTAEConfig:
    from maestro.models.baseline.paper import get_paper_configuration

    encoder = tiny_encoder(get_paper_configuration(key).modalities)
    fields: dict[str, Any] = {
        "swin": TINY_SWIN,
        "utae": TINY_UTAE,
        "decoder_channels": 8,
        "pretrained": False,
        "label_size": 32,
        **changes,
    }
    return baseline_config(key, encoder=encoder, **fields)


def build_shards(root, out, modalities: tuple[str, ...] = ("spot", "s2", "s1_asc", "s1_des", "lc", "lpis")):
    """Shards of the toy tree's train and val splits with ``modalities`` (the session's hold no SPOT)."""
    from shards.cli import main

    code = main(
        [
            "build",
            "--root",
            str(root),
            "--split",
            "train",
            "val",
            "--out",
            str(out),
            "--modalities",
            *modalities,
            "--max-count",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0
    return out
