"""FLAIR #2's aerial baseline: a segmentation-models-pytorch U-Net with a ResNet-34 encoder.

The network is smp's own (``smp.Unet``); this module only builds it from :class:`UNetConfig` and
splits it into encoder / decoder steps, so that U-T&T can add the Sentinel-2 branch to the encoder's
features before the decoder reads them. Weights are random unless the config names some
(``encoder_weights: imagenet``), in which case smp downloads them through its normal loading;
:func:`imagenet_state` fetches the same encoder weights for a network built without them
(``finetune`` loads them into a fresh run, as it does the Swin-UTAE's Swins).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn

from maestro.models.baseline.swin import PretrainedWeightsError
from maestro.models.flair2.config import UNetConfig


class AerialUNet(nn.Module):
    """``(B, in_channels, H, W)`` -> class logits ``(B, num_classes, H, W)`` (smp checks the sizes its encoder needs)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.net = smp.Unet(
            config.encoder,
            encoder_weights=config.encoder_weights,
            encoder_depth=len(config.decoder_channels),
            decoder_channels=config.decoder_channels,
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


def imagenet_state(config: UNetConfig, weights: str = "imagenet") -> dict[str, Tensor]:
    """The ``weights`` of the smp encoder ``config`` names, adapted by smp to ``in_channels`` and
    keyed as :class:`AerialUNet`'s ``net.encoder``; a :class:`PretrainedWeightsError` saying what
    to do when they cannot be fetched (smp downloads them from the Hugging Face Hub)."""
    try:
        encoder = get_encoder(
            config.encoder,
            in_channels=config.in_channels,
            depth=len(config.decoder_channels),
            weights=weights,
        )
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise PretrainedWeightsError(
            f"cannot load the {weights} weights of the smp encoder {config.encoder!r} "
            f"({type(error).__name__}: {str(error)[:300]}). smp downloads them from the Hugging Face Hub: "
            "run once with network access (they are then cached under HF_HOME), or train from random "
            "weights with --no-pretrained (model.pretrained=false)"
        ) from error
    return encoder.state_dict()
