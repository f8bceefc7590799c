"""``finetune --model swin-utae|unet|utt``: the ImageNet weights a fresh run of a supervised baseline starts from.

Everything else is shared with the MAESTRO path: the network a run trains, the preprocessing and
the loss options it adds (the Swin-UTAE's Sentinel-2 cloudy-date filter, U-T&T's class weights)
come from the run's ``model`` section through :func:`maestro.models.finetuning.network_config` and
the registry; shards, EMA, checkpoints, validation mIoU, the test outputs and the CLI are the
stage's. A baseline's inputs are an :class:`~maestro.models.config.EncoderConfig` (registry
defaults for ``model.modalities``, or ``model.encoder``) so that ``preprocess_for`` feeds every
model identical samples. The ImageNet weights are fetched when the run is resolved, like the
MAESTRO encoder's pretrained weights, so a missing network fails before any data is read and a
resumed or re-tested run never needs them again. The CLI trains one task: the Swin-UTAE's
``tasks`` holds only the configured one.
"""

from __future__ import annotations

from typing import Any

from finetune.config import FinetuneConfig
from maestro.models.baseline.config import SwinUTAEConfig
from maestro.models.baseline.swin import imagenet_state as swin_state
from maestro.models.finetuning import network_config
from maestro.models.flair2.segmenter_config import UNetSegmenterConfig
from maestro.models.flair2.unet import imagenet_state as smp_state


def imagenet_state(config: FinetuneConfig) -> dict[str, Any] | None:
    """ImageNet weights for the network's ``pretrained_backbone()`` (the Swin-UTAE's Swins, the
    U-Net's smp encoder), or None when not asked for."""
    if not config.model.pretrained:
        return None
    network = network_config(config.model, config.task)
    if isinstance(network, SwinUTAEConfig):
        return swin_state(network)
    return smp_state(network.unet if isinstance(network, UNetSegmenterConfig) else network.utt.unet)
