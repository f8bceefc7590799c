"""Models: the MAESTRO masked autoencoder and its building blocks."""

from maestro.models.config import MaestroConfig, ModalitySpec
from maestro.modalities import ModalityOverride
from maestro.models.ema import create_ema
from maestro.models.flops import count_flops
from maestro.models.mae import EncoderOutput, MaestroMAE

__all__ = [
    "EncoderOutput",
    "MaestroConfig",
    "MaestroMAE",
    "ModalityOverride",
    "ModalitySpec",
    "count_flops",
    "create_ema",
]
