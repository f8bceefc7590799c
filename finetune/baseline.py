"""``finetune --model swin-utae``: the ImageNet weights a fresh run of the supervised baseline starts from.

Everything else is shared with the MAESTRO path: the network a run trains and the preprocessing it
adds (the Sentinel-2 cloudy-date filter) come from the run's ``model`` section through
:func:`maestro.models.finetuning.network_config` and the registry; shards, EMA, checkpoints,
validation mIoU, the test outputs and the CLI are the stage's. The baseline's inputs are an
:class:`~maestro.models.config.EncoderConfig` (registry defaults for ``model.modalities``, or
``model.encoder``) so that ``preprocess_for`` feeds both models identical samples. The ImageNet
weights are fetched when the run is resolved, like the MAESTRO encoder's pretrained weights, so a
missing network fails before any data is read and a resumed or re-tested run never needs them
again. The CLI trains one task: the model's ``tasks`` holds only the configured one.
"""

from __future__ import annotations

from typing import Any

from finetune.config import FinetuneConfig
from maestro.models.baseline.swin import imagenet_state as swin_state
from maestro.models.finetuning import network_config


def imagenet_state(config: FinetuneConfig) -> dict[str, Any] | None:
    """ImageNet weights for the Swins (keys of ``SwinUTAE.swins``), or None when not asked for."""
    if not config.model.pretrained:
        return None
    return swin_state(network_config(config.model, config.task))
