"""Auxiliary heads: one light classifier per modality on that modality's final tokens alone.

Each gets its own loss (weight beta, see docs/method.md "Fine-tuning heads"), which pushes every
modality's features to be discriminative by themselves, so the fused head does not lean on one
modality and copes when another is dropped or missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.options import DatePooling
from maestro.models.heads.pooling import DatePool
from maestro.models.heads.uperfuse import SegmentationHead


class AuxHead(nn.Module):
    """Date pooling on the modality's own grid, 1x1 conv to classes, bilinear resize to the labels."""

    def __init__(self, width: int, num_classes: int, label_size: int, pooling: DatePooling = "attentive"):
        super().__init__()
        self.pool = DatePool(width, pooling)
        self.head = SegmentationHead(width, num_classes, label_size)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        return self.head(self.pool(tokens, valid))


class AuxHeads(nn.ModuleDict):
    """``{modality: AuxHead}``; called on an encoder output, gives ``{modality: (B, K, H, W)}``."""

    def __init__(
        self,
        modalities: Sequence[str],
        width: int,
        num_classes: int,
        label_size: int,
        pooling: DatePooling = "attentive",
    ):
        super().__init__({key: AuxHead(width, num_classes, label_size, pooling) for key in modalities})

    def forward(self, output: EncoderOutput) -> dict[str, Tensor]:
        return {key: head(output.tokens[key], output.valid[key]) for key, head in self.items()}
