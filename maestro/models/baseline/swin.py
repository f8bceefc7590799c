"""One timm Swin per single-date modality: four stages at strides 4 ... 32, channels-first maps.

The backbone is built by ``timm.create_model(name, features_only=True, in_chans=C, img_size=S)``,
so the modality's own band count and image size shape it (timm clamps the attention window of
stages smaller than it, e.g. SPOT's 64 px, which is why SPOT's Swin has fewer parameters than
the aerial one). ImageNet weights come through timm's normal pretrained loading (Hugging Face Hub
cache, ``HF_HUB_OFFLINE`` honoured); timm adapts the first convolution to ``in_chans`` and resizes
relative-position tables to smaller windows. When the weights cannot be fetched, building fails
with :class:`PretrainedWeightsError` saying how to proceed; random weights are only ever used when
the config asks for them (``pretrained: false``).
"""

from __future__ import annotations

import logging

import timm
from einops import rearrange
from torch import Tensor, nn

from maestro.errors import ConfigError
from maestro.models.baseline.config import SwinConfig, SwinUTAEConfig

log = logging.getLogger(__name__)


class PretrainedWeightsError(ConfigError):
    """ImageNet weights were asked for and could not be loaded (no network and no cached copy)."""


def create_swin(
    config: SwinConfig, in_chans: int, img_size: int, pretrained: bool, **overrides: object
) -> nn.Module:
    """timm's ``features_only`` Swin for one modality; ``overrides`` go to ``timm.create_model``."""
    kwargs = {**config.timm_kwargs(), **overrides}
    try:
        return timm.create_model(
            config.name,
            pretrained=pretrained,
            features_only=True,
            in_chans=in_chans,
            img_size=img_size,
            **kwargs,
        )
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"cannot load the ImageNet weights of {config.name!r} ({type(error).__name__}: {str(error)[:300]}). "
            "They are downloaded by timm from the Hugging Face Hub: run once with network access (they are then "
            "cached under HF_HOME), or train from random weights with --no-pretrained (model.pretrained=false)"
        ) from error


class SwinBackbone(nn.Module):
    """``(B, C, S, S)`` -> four maps ``(B, C_i, S / 4 / 2^i, ...)``, channels first (timm gives NHWC)."""

    def __init__(
        self, config: SwinConfig, in_chans: int, img_size: int, pretrained: bool = False, **overrides: object
    ):
        super().__init__()
        self.body = create_swin(config, in_chans, img_size, pretrained, **overrides)
        self.out_channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        if len(self.out_channels) != 4:
            raise ConfigError(
                f"swin {config.name!r} gives {len(self.out_channels)} stages; the baseline needs 4"
            )
        log.debug("swin %s: %d bands at %d px, stages %s", config.name, in_chans, img_size, self.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        stages = self.body(x)
        return (
            [rearrange(stage, "b h w c -> b c h w") for stage in stages]
            if self.channels_last
            else list(stages)
        )

    def no_weight_decay(self) -> set[str]:
        """Relative-position tables are exempt from weight decay (the Swin recipe)."""
        return {name for name, _ in self.named_parameters() if name.endswith("relative_position_bias_table")}


def imagenet_state(config: SwinUTAEConfig) -> dict[str, Tensor]:
    """ImageNet weights of every single-date modality's Swin, keyed as ``SwinUTAE.swins`` is, so a
    model built without them can load them later (fine-tuning fetches them before any data is read)."""
    specs = config.encoder.specs
    state: dict[str, Tensor] = {}
    for key in config.single_date:
        backbone = SwinBackbone(config.swin, specs[key].num_bands, specs[key].image_size, pretrained=True)
        state.update({f"{key}.{name}": value for name, value in backbone.state_dict().items()})
    return state
