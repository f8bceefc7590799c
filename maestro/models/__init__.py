"""Models: the MAESTRO encoder, the masked autoencoder that pretrains it, and their blocks."""

from maestro.modalities import ModalityOverride
from maestro.models.config import EncoderConfig, MAEConfig, ModalitySpec
from maestro.models.ema import create_ema
from maestro.models.encoder import EncoderOutput, MaestroEncoder
from maestro.models.flops import count_flops
from maestro.models.mae import MaestroMAE

__all__ = [
    "EncoderConfig",
    "EncoderOutput",
    "MAEConfig",
    "MaestroEncoder",
    "MaestroMAE",
    "ModalityOverride",
    "ModalitySpec",
    "count_flops",
    "create_ema",
]
