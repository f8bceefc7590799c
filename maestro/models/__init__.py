"""Models: the MAESTRO encoder, the masked autoencoder that pretrains it, and their blocks.

Public API (imported lazily: configs such as :mod:`maestro.models.config` are read by every
command at start-up, before torch and timm are needed)::

    from maestro.models import EncoderConfig, MaestroEncoder, MaestroMAE
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EncoderConfig": "maestro.models.config",
    "EncoderOutput": "maestro.models.encoder",
    "MAEConfig": "maestro.models.config",
    "MaestroEncoder": "maestro.models.encoder",
    "MaestroMAE": "maestro.models.mae",
    "ModalityOverride": "maestro.modalities",
    "ModalitySpec": "maestro.models.config",
    "count_flops": "maestro.models.flops",
    "create_ema": "maestro.models.ema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maestro.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
