"""Publishing and loading weights: model folders, the Hugging Face Hub, training checkpoints.

Public API (imported lazily, so that the model modules can use :class:`HubModel` without a cycle)::

    from maestro.hub import from_pretrained, save_pretrained, push_to_hub, publish
    model = from_pretrained("org/name@v1.0")        # encoder, MAE or segmenter, as the folder says
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HubModel": "maestro.hub.pretrained",
    "from_pretrained": "maestro.hub.pretrained",
    "save_pretrained": "maestro.hub.pretrained",
    "push_to_hub": "maestro.hub.pretrained",
    "resolve_folder": "maestro.hub.pretrained",
    "segmentation_task": "maestro.hub.pretrained",
    "MODEL_REGISTRY": "maestro.hub.registry",
    "ModelType": "maestro.hub.registry",
    "CardFacts": "maestro.hub.card",
    "build_card": "maestro.hub.card",
    "publish": "maestro.hub.publish",
    "export_checkpoint": "maestro.hub.publish",
    "upload_folder": "maestro.hub.upload",
    "download": "maestro.hub.remote",
    "parse_repo": "maestro.hub.remote",
    "write_model_folder": "maestro.hub.folder",
    "read_model_folder": "maestro.hub.folder",
    "load_strict": "maestro.hub.folder",
    "load_encoder_weights": "maestro.hub.sources",
    "restrict": "maestro.hub.sources",
    "EncoderWeights": "maestro.hub.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maestro.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
