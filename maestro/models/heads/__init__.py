"""Segmentation heads on MAESTRO encoder features, by name in :data:`HEADS`.

``uperfuse`` (default): four encoder depths, date pooling and modality fusion, a simple feature
pyramid and smp's UPerNet decoder. ``maestro``: the paper's attentive pooling over modalities and
dates with a pixel-shuffle output. ``linear``: the linear probe, one linear layer on the mean of
each modality's final tokens. All are described in docs/method.md, "Fine-tuning heads".
"""

from maestro.models.heads.attentive import PixelShuffleHead, StackedPool
from maestro.models.heads.aux import AuxHead, AuxHeads
from maestro.models.heads.linear import LinearHead, TokenMeans
from maestro.models.heads.pooling import AttentivePool, DatePool, MeanPool, reference_grid
from maestro.models.heads.registry import HEADS, HeadParts, HeadSpec, get_head
from maestro.models.heads.uperfuse import SegmentationHead, SimplePyramid, UPerFuseDecoder

__all__ = [
    "HEADS",
    "AttentivePool",
    "AuxHead",
    "AuxHeads",
    "DatePool",
    "HeadParts",
    "HeadSpec",
    "LinearHead",
    "MeanPool",
    "PixelShuffleHead",
    "SegmentationHead",
    "SimplePyramid",
    "StackedPool",
    "TokenMeans",
    "UPerFuseDecoder",
    "get_head",
    "reference_grid",
]
