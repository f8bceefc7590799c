"""FLAIR #2's supervised baselines: U-Net (ResNet-34) on aerial and U-T&T on aerial + Sentinel-2.

``config`` (what to build, no torch), ``unet`` (smp's U-Net split into encoder / decoder),
``fusion`` (the cropped and collapsed modules), ``utt`` (:class:`UTT` and its two-branch loss) and
``paper`` (the published baseline table and the reference implementation's parameter counts);
``segmenter_config`` / ``segmenter`` wire them into ``finetune --model unet|utt``, the model
registry (``unet-segmenter``, ``utt-segmenter``), ``maestro publish`` and ``predict``.

The names below are imported lazily, so that the config loads without the networks.
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "AerialUNet": "maestro.models.flair2.unet",
    "PAPER_BASELINES": "maestro.models.flair2.paper",
    "UNetConfig": "maestro.models.flair2.config",
    "UTT": "maestro.models.flair2.utt",
    "UTTConfig": "maestro.models.flair2.config",
    "UTTOutput": "maestro.models.flair2.utt",
    "UNetSegmenter": "maestro.models.flair2.segmenter",
    "UTTSegmenter": "maestro.models.flair2.segmenter",
    "count_parameters": "maestro.models.flair2.paper",
    "utt_loss": "maestro.models.flair2.utt",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
