"""Pretraining checkpoints written before the encoder was split from the masked autoencoder.

Those checkpoints hold a flat model config (encoder, masking and decoder fields side by side) and
MAE weights whose encoder parts sit at the top level. The mapping to the current layout is fixed:

=====================  =============================
before the split       now
=====================  =============================
``embed.*``            ``encoder.patch_embed.*``
``encoders.*``         ``encoder.streams.*``
``inter.*``            ``encoder.late_fusion.*``
(every other key)      unchanged
=====================  =============================

and the flat config's encoder fields move under ``model.encoder``. Parameters are registered in
the same order as before, so optimiser state needs no change.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from maestro.models.config import EncoderConfig

log = logging.getLogger(__name__)

RENAMED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("embed.", "encoder.patch_embed."),
    ("encoders.", "encoder.streams."),
    ("inter.", "encoder.late_fusion."),
)
ENCODER_FIELDS = frozenset(f.name for f in dataclasses.fields(EncoderConfig))


def is_flat_mae_config(model: Mapping[str, Any]) -> bool:
    """Whether a model-config mapping predates the split (encoder fields at the top level)."""
    return "encoder" not in model and bool(ENCODER_FIELDS & set(model))


def upgrade_mae_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """Flat MAE config mapping -> ``{"encoder": {...}, masking and decoder fields}``."""
    if not is_flat_mae_config(model):
        return dict(model)
    encoder = {key: value for key, value in model.items() if key in ENCODER_FIELDS}
    rest = {key: value for key, value in model.items() if key not in ENCODER_FIELDS}
    return {"encoder": encoder, **rest}


def upgrade_mae_state_dict(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Rename pre-split MAE keys (under ``prefix``, e.g. ``"model."``) to the current layout."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for old, current in RENAMED_PREFIXES:
                if rest.startswith(old):
                    new = prefix + current + rest[len(old) :]
                    break
        out[new] = value
    return out
