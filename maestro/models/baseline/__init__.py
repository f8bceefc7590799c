"""The supervised Swin-UTAE baseline of FLAIR-HUB, trained and scored by the same ``finetune`` as MAESTRO.

``config`` (what to build), ``swin`` (one timm Swin per single-date modality), ``ltae`` / ``utae``
(one U-TAE per time series, with padding masks and real date positions), ``inputs`` (standardisation,
day offsets, monthly averages), ``fusion`` (per-stage fusion, per-task UPerNet), ``model``
(:class:`SwinUTAE`) and ``paper`` (the paper's configurations as data). docs/method.md,
"Supervised baseline: Swin-UTAE", has the method.
"""

from maestro.models.baseline.config import BaselineOptions, SwinConfig, SwinUTAEConfig, UTAEConfig
from maestro.models.baseline.model import SwinUTAE
from maestro.models.baseline.paper import PAPER_CONFIGURATIONS, baseline_config, count_parameters
from maestro.models.baseline.swin import PretrainedWeightsError

__all__ = [
    "PAPER_CONFIGURATIONS",
    "BaselineOptions",
    "PretrainedWeightsError",
    "SwinConfig",
    "SwinUTAE",
    "SwinUTAEConfig",
    "UTAEConfig",
    "baseline_config",
    "count_parameters",
]
