"""Configuration of FLAIR #2's supervised baselines: U-Net (ResNet-34) on aerial, U-T&T on aerial + Sentinel-2.

Frozen and validated at construction (:class:`~maestro.errors.ConfigError`), loaded strictly through
:class:`~maestro.config.ConfigMixin` like the other model configs. Loads without torch: the
fine-tuning config reads it at start-up, the networks come only when built.

Defaults are the challenge's baseline settings (IGNF/FLAIR-2, ``flair-2-config.yml``): 5 aerial
bands (R, G, B, NIR, elevation), 13 classes, 10 Sentinel-2 bands on a 40 px super-patch, a U-TAE
with widths 64, 64, 128, 128, down/up convolutions of kernel 4 and stride 2, 16 heads, d_model 256,
d_k 4, and equal weights for the U-Net and U-TAE losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.errors import ConfigError
from maestro.models.baseline.config import UTAEConfig

FUSIONS = ("cropped", "collapsed")
"""The paper's two fusion modules; U-T&T sums the ones it uses."""


@dataclass(frozen=True)
class UNetConfig(ConfigMixin):
    """segmentation-models-pytorch U-Net on the aerial patch."""

    in_channels: int = 5
    num_classes: int = 13
    encoder: str = "resnet34"
    """An smp encoder name."""
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    """Widths of smp's decoder blocks, deepest first (smp's defaults); their number is the encoder
    depth, so fewer blocks also drop the deepest encoder stages (tests run 3 narrow ones)."""
    encoder_weights: str | None = None
    """``None``: random weights, nothing downloaded (the default, and what tests use); ``imagenet``:
    smp fetches the encoder's ImageNet weights (the challenge baseline starts from them)."""

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ConfigError(f"in_channels: {self.in_channels} must be >= 1")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes: {self.num_classes} must be >= 2")
        if not self.encoder:
            raise ConfigError("encoder: an smp encoder name is required (e.g. resnet34)")
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        if not 1 <= len(self.decoder_channels) <= 5 or min(self.decoder_channels) < 1:
            raise ConfigError(
                f"decoder_channels: {list(self.decoder_channels)}; need 1 to 5 positive widths, one per encoder stage"
            )
        if self.encoder_weights is not None and not self.encoder_weights:
            raise ConfigError("encoder_weights: null for random weights, or a name such as imagenet")


def challenge_utae() -> UTAEConfig:
    """The challenge's U-TAE: stride-2 levels (40, 20, 10, 5 px), 64/64/128/128 widths (the default
    widths of :class:`UTAEConfig` beside another branch), no output convolutions of its own."""
    return UTAEConfig(kernel_size=4, stride=2)


@dataclass(frozen=True)
class UTTConfig(ConfigMixin):
    """U-T&T: the U-Net on aerial plus a U-TAE on the Sentinel-2 super-patch, fused into the U-Net encoder."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    utae: UTAEConfig = field(default_factory=challenge_utae)
    s2_channels: int = 10
    footprint: int = 10
    """Side, in Sentinel-2 pixels, of the aerial patch inside the super-patch: 512 px x 0.2 m = 102.4 m,
    about 10 pixels at 10 m (the reference crops 10 x 10 around the super-patch centre)."""
    fusions: tuple[str, ...] = FUSIONS
    """Which of ``cropped`` / ``collapsed`` feed the U-Net (summed when both)."""
    collapsed_dropout: float = 0.3
    """Dropout between the layers of the collapsed module's MLPs."""
    utae_dropout: float = 0.0
    """Training only: the probability that a batch goes through the U-Net without the U-TAE's
    contribution (the reference's ``drop_utae_modality``)."""
    aux_weight: float = 1.0
    """Weight of the U-TAE branch's own loss (its cropped, upsampled class scores) beside the U-Net's
    (weight 1): the reference's ``w_unet_utae`` is 1, 1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", config_io.nested(UNetConfig, self.unet, "unet"))
        object.__setattr__(self, "utae", config_io.nested(UTAEConfig, self.utae, "utae"))
        object.__setattr__(self, "fusions", tuple(self.fusions))
        unknown = [name for name in self.fusions if name not in FUSIONS]
        if unknown or not self.fusions or len(set(self.fusions)) != len(self.fusions):
            raise ConfigError(
                f"fusions: {list(self.fusions)}; need one or both of {list(FUSIONS)}, each once"
            )
        if self.s2_channels < 1 or self.footprint < 1:
            raise ConfigError(f"s2_channels {self.s2_channels} and footprint {self.footprint} must be >= 1")
        for name in ("collapsed_dropout", "utae_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: {getattr(self, name)} must be in [0, 1)")
        if self.aux_weight < 0.0:
            raise ConfigError(f"aux_weight: {self.aux_weight} must be >= 0")

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    @property
    def utae_width(self) -> int:
        """Channels of the U-TAE's finest decoder map, the one both fusions read."""
        return self.utae.widths(True)[1][0]
