"""Synthetic model-sample batches and tiny configs, for tests and benchmarks (no data needed).

Images are smooth random fields (a few low-frequency sinusoids per band and date plus a little
noise), so masked reconstruction is learnable; times follow the model-sample contract
([years since the reference date, day of year, hour]).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from maestro.modalities import ModalityOverride
from maestro.models.config import EncoderConfig, MAEConfig


def tiny_config(**changes: Any) -> MAEConfig:
    """A CPU-fast MAE config on small images: aerial 32 px / p8, dem 32 px / p16, s2 3 dates and
    s1_asc/s1_des 2 dates at 4 px / p2 (48 tokens), width 64, depth 3 (1 late-fusion block).

    ``changes`` may name fields of either :class:`EncoderConfig` or :class:`MAEConfig`.
    """
    fields: dict[str, Any] = {
        "modalities": ("aerial", "dem", "s2", "s1_asc", "s1_des"),
        "overrides": {
            "aerial": ModalityOverride(image_size=32, patch_size=8),
            "dem": ModalityOverride(image_size=32, patch_size=16),
            "s2": ModalityOverride(image_size=4, num_dates=3),
            "s1_asc": ModalityOverride(image_size=4, num_dates=2),
            "s1_des": ModalityOverride(image_size=4, num_dates=2),
        },
        "size": "tiny",
        "width": 64,
        "depth": 3,
        "inter_depth": 1,
        "decoder_width": 32,
        "decoder_heads": 2,
        "decoder_depth": 1,
    }
    fields.update(changes)
    encoder_fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    encoder = EncoderConfig(**{k: v for k, v in fields.items() if k in encoder_fields})
    return MAEConfig(encoder=encoder, **{k: v for k, v in fields.items() if k not in encoder_fields})


def synthetic_batch(
    config: EncoderConfig | MAEConfig, batch_size: int = 2, seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, dict[str, Tensor]]:
    """``{"inputs", "times", "valid"}`` for ``config`` (all dates valid), deterministic in ``seed``."""
    encoder = config.encoder if isinstance(config, MAEConfig) else config
    generator = torch.Generator().manual_seed(seed)
    inputs, times, valid = {}, {}, {}
    for key, spec in encoder.specs.items():
        size, dates, bands = spec.image_size, spec.num_dates, spec.num_bands
        coords = torch.linspace(0, 1, size)
        y, x = torch.meshgrid(coords, coords, indexing="ij")
        field = torch.zeros(batch_size, dates, bands, size, size)
        for _ in range(3):
            shape = (batch_size, dates, bands, 1, 1)
            freq_x = torch.rand(shape, generator=generator) * 3
            freq_y = torch.rand(shape, generator=generator) * 3
            phase = torch.rand(shape, generator=generator) * 2 * math.pi
            field += torch.sin(2 * math.pi * (freq_x * x + freq_y * y) + phase)
        field += 0.05 * torch.randn(field.shape, generator=generator)
        inputs[key] = field.to(device)
        years = torch.rand(batch_size, dates, generator=generator) * 2 - 1
        doy = torch.randint(0, 365, (batch_size, dates), generator=generator).float()
        hour = torch.full((batch_size, dates), 11.0)
        times[key] = torch.stack([years, doy, hour], dim=-1).to(device)
        valid[key] = torch.ones(batch_size, dates, dtype=torch.bool, device=device)
    return {"inputs": inputs, "times": times, "valid": valid}
