"""``finetune --model swin-utae``: what the supervised baseline needs from a fine-tuning config.

Everything else (shards and preprocessing, EMA, checkpoints, validation mIoU, the test outputs,
the CLI) is the MAESTRO path itself: the baseline takes the same batches and returns the same
``{"logits", "aux"}``. Its inputs are an :class:`~maestro.models.config.EncoderConfig` (registry
defaults for ``model.modalities``, or ``model.encoder``) so that ``preprocess_for`` feeds both
models identical samples; the Sentinel-2 cloudy-date filter is the one preprocessing option it adds.
The ImageNet weights are fetched when the run is resolved, like the MAESTRO encoder's pretrained
weights, so a missing network fails before any data is read and a resumed or re-tested run never
needs them again. The CLI trains one task: the model's ``tasks`` holds only the configured one.
"""

from __future__ import annotations

from typing import Any

from finetune.config import FinetuneConfig, ModelConfig
from maestro.modalities import MODALITIES
from maestro.models.baseline.config import SwinUTAEConfig


def is_baseline(model: ModelConfig) -> bool:
    return model.architecture == "swin-utae"


def baseline_config(config: FinetuneConfig) -> SwinUTAEConfig:
    """The Swin-UTAE a fine-tuning config describes (``model.encoder`` resolved). Built with random
    Swins: the ImageNet weights of a fresh run come from :func:`resolve` in the CLI."""
    model, target = config.model, config.task.target
    options = model.baseline
    return SwinUTAEConfig(
        encoder=model.encoder,
        tasks={config.task.name: target.num_classes},
        label_size=MODALITIES[target.label_modality].size_px,
        swin=options.swin,
        utae=options.utae,
        decoder_channels=options.decoder_channels,
        pretrained=False,
        aux_heads=model.aux_heads,
        modality_dropout=model.modality_dropout,
    )


def preprocess_options(model: ModelConfig) -> dict[str, Any]:
    """Preprocessing options the architecture adds to the shared ones."""
    if not is_baseline(model):
        return {}
    return {"cloudy_date_fraction": model.baseline.cloudy_date_fraction}


def imagenet_state(config: FinetuneConfig) -> dict[str, Any] | None:
    """ImageNet weights for the Swins (keys of ``SwinUTAE.swins``), or None when not asked for."""
    from maestro.models.baseline.swin import imagenet_state as swin_state

    if not config.model.pretrained:
        return None
    return swin_state(baseline_config(config))
