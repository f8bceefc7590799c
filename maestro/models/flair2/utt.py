"""U-T&T, FLAIR #2's two-branch baseline: a U-Net on the aerial patch and a U-TAE on the Sentinel-2 super-patch.

Data flow (IGNF/FLAIR-2, ``src/backbones/txt_model.py``; defaults 512 px aerial, 40 px super-patch)::

    aerial (B, 5, 512, 512) -> U-Net encoder -> levels (B, c_i, 512 / 2^i, ...), c = 5, 64, 64, 128, 256, 512
    S2 (B, T, 10, 40, 40), days, valid -> suite U-TAE -> finest decoder map (B, 64, 40, 40)
    cropped(map) + collapsed(map) -> one map per level i >= 1, added to the U-Net level (fusion.py)
    -> U-Net decoder + segmentation head -> logits (B, 13, 512, 512)
    auxiliary: centre 10 x 10 of the U-TAE map -> 1x1 conv -> nearest upsampling -> aux logits (B, 13, 512, 512)

The U-TAE is the suite's (:class:`~maestro.models.baseline.utae.UTAE`: real day offsets, padding
masks for variable series lengths); the reference's own U-TAE has the same layers, plus output
convolutions whose scores it discards (not built here). The auxiliary scores are trained against
the same labels (:func:`utt_loss`, the reference's equal weights by default) and never predicted
with. The reference's optional aerial-metadata MLP (an encoding of the patch's acquisition
metadata added to the deepest U-Net level) is not built. Day offsets: the reference counts May 15
minus the acquisition day; the suite's offsets (acquisition minus ``UTAEConfig.reference_day``, May
15 by default) have the opposite sign, which only mirrors the learned date code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maestro.models.baseline.utae import UTAE
from maestro.models.flair2.config import UTTConfig
from maestro.models.flair2.fusion import CollapsedFusion, CroppedFusion, centre_crop
from maestro.models.flair2.unet import AerialUNet


class UTTOutput(NamedTuple):
    logits: Tensor
    """``(B, K, H, W)`` from the U-Net: the prediction."""
    aux_logits: Tensor
    """``(B, K, H, W)`` from the U-TAE alone (cropped to the patch, upsampled): its auxiliary loss."""


class UTT(nn.Module):
    """``forward(aerial, s2, days, valid)``: ``aerial (B, C, H, W)``, ``s2 (B, T, C_s2, S, S)``, day
    offsets ``days (B, T)`` and ``valid (B, T)`` (False: a padded date)."""

    def __init__(self, config: UTTConfig):
        super().__init__()
        self.config = config
        self.unet = AerialUNet(config.unet)
        self.utae = UTAE(config.utae, config.s2_channels, fused=True)
        levels = self.unet.feature_channels[1:]
        width = config.utae_width
        self.cropped = CroppedFusion(width, levels, config.footprint) if "cropped" in config.fusions else None
        self.collapsed = (
            CollapsedFusion(width, levels, config.collapsed_dropout)
            if "collapsed" in config.fusions
            else None
        )
        self.aux_head = nn.Conv2d(width, config.num_classes, kernel_size=1)

    def fusion_maps(self, utae_map: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
        """The U-TAE's contribution to each U-Net level (stride 2 and deeper)."""
        parts = [module(utae_map, sizes) for module in (self.cropped, self.collapsed) if module is not None]
        return [sum(maps[1:], maps[0]) for maps in zip(*parts, strict=True)]

    def forward(self, aerial: Tensor, s2: Tensor, days: Tensor, valid: Tensor) -> UTTOutput:
        utae_map = self.utae(s2, days, valid).maps[0]
        features = self.unet.encode(aerial)
        drop = self.training and float(torch.rand(())) < self.config.utae_dropout
        if not drop:
            added = self.fusion_maps(utae_map, [tuple(f.shape[-2:]) for f in features[1:]])
            features = [features[0], *(f + a.to(f.dtype) for f, a in zip(features[1:], added, strict=True))]
        logits = self.unet.decode(features)
        aux = self.aux_head(centre_crop(utae_map, self.config.footprint))
        aux_logits = F.interpolate(aux, size=aerial.shape[-2:], mode="nearest")
        return UTTOutput(logits, aux_logits)


def utt_loss(
    output: UTTOutput,
    target: Tensor,
    *,
    aux_weight: float = 1.0,
    class_weight: Tensor | None = None,
    aux_class_weight: Tensor | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """Cross-entropy of the U-Net plus ``aux_weight`` times that of the U-TAE's scores, against the
    same labels; each branch has its own class weights (the reference zeroes some for the U-TAE)."""
    main = F.cross_entropy(output.logits, target, weight=class_weight, ignore_index=ignore_index)
    aux = F.cross_entropy(output.aux_logits, target, weight=aux_class_weight, ignore_index=ignore_index)
    return main + aux_weight * aux
