"""Segmentation heads on MAESTRO encoder features, by name in :data:`HEADS`.

``uperfuse`` (default): four encoder depths, date pooling and modality fusion, a simple feature
pyramid and smp's UPerNet decoder. ``maestro``: the paper's attentive pooling over modalities and
dates with a pixel-shuffle output. ``linear``: the linear probe, one linear layer on the mean of
each modality's final tokens. All are described in docs/method.md, "Fine-tuning heads".

The names below are imported lazily: the registry and :mod:`.options` load without torch, the
modules (:mod:`.uperfuse`, :mod:`.attentive`, :mod:`.linear`, ...) only when used.
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "HEADS": "maestro.models.heads.registry",
    "AttentivePool": "maestro.models.heads.pooling",
    "AuxHead": "maestro.models.heads.aux",
    "AuxHeads": "maestro.models.heads.aux",
    "DatePool": "maestro.models.heads.pooling",
    "HeadParts": "maestro.models.heads.registry",
    "HeadSpec": "maestro.models.heads.registry",
    "LinearHead": "maestro.models.heads.linear",
    "MeanPool": "maestro.models.heads.pooling",
    "PixelShuffleHead": "maestro.models.heads.attentive",
    "SegmentationHead": "maestro.models.heads.uperfuse",
    "SimplePyramid": "maestro.models.heads.uperfuse",
    "StackedPool": "maestro.models.heads.attentive",
    "TokenMeans": "maestro.models.heads.linear",
    "UPerFuseDecoder": "maestro.models.heads.uperfuse",
    "get_head": "maestro.models.heads.registry",
    "reference_grid": "maestro.models.heads.options",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
