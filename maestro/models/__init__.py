"""Models: the MAESTRO encoder, the masked autoencoder that pretrains it, the segmenters, their
blocks, and the registry of the types a model folder can hold.

Public API (imported on first use, for start-up speed only: configs such as
:mod:`maestro.models.config` are read by every command at start-up, before torch and timm are
needed)::

    from maestro.models import EncoderConfig, MaestroEncoder, MaestroMAE, from_pretrained
    model = from_pretrained("org/name@v1.0")        # whichever network the folder or repo holds
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "EncoderConfig": "maestro.models.config",
    "EncoderOutput": "maestro.models.encoder",
    "MAEConfig": "maestro.models.config",
    "MaestroEncoder": "maestro.models.encoder",
    "MaestroMAE": "maestro.models.mae",
    "MaestroSegmenter": "maestro.models.segmenter",
    "MODEL_TYPES": "maestro.models.registry",
    "ModelType": "maestro.models.registry",
    "get_model_type": "maestro.models.registry",
    "from_pretrained": "maestro.models.zoo",
    "ModalityOverride": "maestro.modalities",
    "ModalitySpec": "maestro.models.config",
    "count_flops": "maestro.models.flops",
    "create_ema": "maestro.models.ema",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
