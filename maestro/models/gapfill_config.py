"""What a cloud-removal network is: a pretrained masked autoencoder, the series it fills, and when a
pixel counts as cloudy. Loaded without torch (the registry and the commands read it at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from maestro.models.config import EncoderConfig, MAEConfig


@dataclass(frozen=True)
class GapFillConfig(ConfigMixin):
    """:class:`~maestro.models.gapfill.MaestroGapFill`: the MAE plus an absolute-reflectance head."""

    mae: MAEConfig
    target: str = "s2"
    """The series whose cloudy dates are filled: an input of the MAE with a cloud mask."""
    cloud_threshold: float = 0.0
    """A pixel is cloudy (filled, never a target) when a band of its mask (snow, cloud
    probability, 0-100) exceeds this; 0 flags any probability, as the suite's date selection does."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mae", config_io.nested(MAEConfig, self.mae, "mae"))
        modalities = self.mae.encoder.modalities
        masked = [m.companion_of for m in MODALITIES.values() if m.kind == "mask"]
        if self.target not in modalities or self.target not in masked:
            raise ConfigError(
                f"target: {self.target!r} must be an input time series with a cloud mask among the "
                f"MAE's inputs {list(modalities)}"
            )
        if not 0.0 <= self.cloud_threshold < 100.0:
            raise ConfigError(f"cloud_threshold: {self.cloud_threshold} must be in [0, 100)")

    @property
    def encoder(self) -> EncoderConfig:
        """What the network reads (the MAE's encoder): what registries, cards and loaders ask of
        every model config."""
        return self.mae.encoder

    @property
    def others(self) -> tuple[str, ...]:
        """The inputs the filled series is restored from (S1, aerial, ...)."""
        return tuple(key for key in self.mae.encoder.modalities if key != self.target)
