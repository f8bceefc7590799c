"""FLAIR #2's aerial baseline: a segmentation-models-pytorch U-Net with a ResNet-34 encoder.

The network is smp's own (``smp.Unet``); this module only builds it from :class:`UNetConfig` and
splits it into encoder / decoder steps, so that U-T&T can add the Sentinel-2 branch to the encoder's
features before the decoder reads them. Weights are random unless the config names some
(``encoder_weights: imagenet``), in which case smp downloads them through its normal loading.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from maestro.models.flair2.config import UNetConfig


class AerialUNet(nn.Module):
    """``(B, in_channels, H, W)`` -> class logits ``(B, num_classes, H, W)`` (smp checks the sizes its encoder needs)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.net = smp.Unet(
            config.encoder,
            encoder_weights=config.encoder_weights,
            in_channels=config.in_channels,
            classes=config.num_classes,
        )

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of :meth:`encode`'s maps, finest (the input itself) first."""
        return tuple(self.net.encoder.out_channels)

    @property
    def output_stride(self) -> int:
        return int(self.net.encoder.output_stride)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder maps at strides 1, 2, 4, ...; the first is the input, which smp's decoder skips."""
        self.net.check_input_shape(x)
        return list(self.net.encoder(x))

    def decode(self, features: list[Tensor]) -> Tensor:
        return self.net.segmentation_head(self.net.decoder(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
