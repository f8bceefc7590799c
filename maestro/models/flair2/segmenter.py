"""FLAIR #2's U-Net and U-T&T on the suite's model-sample batches (``finetune --model unet|utt``).

Data flow of the fine-tuning contract ``forward(inputs, times, valid, *, allow_missing, padded)``::

    single-date {aerial (B, 1, 4, H, W), elevation (B, 1, 1, H, W)} -> concatenated (B, 5, H, W)
    U-Net:  -> AerialUNet                                         -> {"logits": (B, K, H, W)}
    U-T&T:  + series s2 (B, T, 10, S, S), day offsets, valid -> UTT -> {"logits", "aux": {"s2": ...}}

The same batches as :class:`~maestro.models.segmenter.MaestroSegmenter` and the same output
dictionary, so fine-tuning trains, evaluates, checkpoints and publishes them with one code path.
The U-TAE branch's scores are the ``aux`` output, trained by the shared auxiliary loss with the
paper's weights (:meth:`UTTSegmenterConfig.loss_options`). Day offsets are the Swin-UTAE's
(:func:`~maestro.models.baseline.inputs.day_offsets`); a missing input (``allow_missing``) is zeros
with no valid date, as in the other segmenters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

from maestro.hub.pretrained import HubModel
from maestro.models.baseline.inputs import day_offsets, monthly_average
from maestro.models.flair2.segmenter_config import UNetSegmenterConfig, UTTSegmenterConfig
from maestro.models.flair2.unet import AerialUNet
from maestro.models.flair2.utt import UTT
from maestro.models.registry import register_model_type
from maestro.models.segmenter import SegmenterOutput, complete_batch

Tensors = Mapping[str, Tensor]


def single_date_stack(inputs: Tensors, keys: tuple[str, ...]) -> Tensor:
    """``{key: (B, 1, C_k, H, W)}`` -> ``(B, sum C_k, H, W)``, bands of ``keys`` in that order."""
    return torch.cat([rearrange(inputs[key], "b 1 c h w -> b c h w") for key in keys], dim=1)


@register_model_type("unet-segmenter")
class UNetSegmenter(nn.Module, HubModel):
    """smp U-Net on the single-date inputs' bands, concatenated."""

    def __init__(self, config: UNetSegmenterConfig):
        super().__init__()
        self.config = config
        self.unet = AerialUNet(config.unet)

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> SegmenterOutput:
        """``{"logits": (B, K, H, W)}``; ``times`` and ``padded`` are accepted for the contract."""
        inputs, _, _ = complete_batch(inputs, times, valid, self.config.encoder.specs, allow_missing)
        return {"logits": self.unet(single_date_stack(inputs, self.config.single_date))}

    def pretrained_backbone(self) -> nn.Module:
        """Where a fresh run's ImageNet weights go: the smp encoder."""
        return self.unet.net.encoder


@register_model_type("utt-segmenter")
class UTTSegmenter(nn.Module, HubModel):
    """U-T&T: the U-Net on the single-date inputs, the U-TAE on the time series, fused."""

    def __init__(self, config: UTTSegmenterConfig):
        super().__init__()
        self.config = config
        self.utt = UTT(config.utt)

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> SegmenterOutput:
        """``{"logits", "aux": {series: U-TAE branch logits}}``, all ``(B, K, H, W)``; ``valid``
        masks the series' padded dates."""
        config = self.config
        inputs, times, valid = complete_batch(inputs, times, valid, config.encoder.specs, allow_missing)
        key, utae = config.series, config.utt.utae
        series, dates, mask = inputs[key], times[key], valid[key]
        if utae.monthly_average:
            series, dates, mask = monthly_average(series, dates, mask)
        out = self.utt(
            single_date_stack(inputs, config.single_date),
            series,
            day_offsets(dates, utae.reference_day),
            mask,
        )
        return {"logits": out.logits, "aux": {key: out.aux_logits}}

    def pretrained_backbone(self) -> nn.Module:
        """Where a fresh run's ImageNet weights go: the U-Net's smp encoder."""
        return self.utt.unet.net.encoder

    def no_weight_decay(self) -> set[str]:
        """L-TAE queries, as in the Swin-UTAE."""
        return {name for name, _ in self.named_parameters() if name.endswith("ltae.query")}
