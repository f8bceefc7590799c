"""The supervised Swin-UTAE baseline of FLAIR-HUB, trained and scored by the same ``finetune`` as MAESTRO.

``config`` (what to build), ``swin`` (one timm Swin per single-date modality), ``ltae`` / ``utae``
(one U-TAE per time series, with padding masks and real date positions), ``inputs`` (standardisation,
day offsets, monthly averages), ``fusion`` (per-stage fusion, per-task UPerNet), ``model``
(:class:`SwinUTAE`) and ``paper`` (the paper's configurations as data). docs/method.md,
"Supervised baseline: Swin-UTAE", has the method.

The names below are imported lazily: :mod:`.config` (read by the fine-tuning config at every
start-up) loads without torch, the networks only when used.
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "PAPER_CONFIGURATIONS": "maestro.models.baseline.paper",
    "BaselineOptions": "maestro.models.baseline.config",
    "PretrainedWeightsError": "maestro.models.baseline.swin",
    "SwinConfig": "maestro.models.baseline.config",
    "SwinUTAE": "maestro.models.baseline.model",
    "SwinUTAEConfig": "maestro.models.baseline.config",
    "UTAEConfig": "maestro.models.baseline.config",
    "baseline_config": "maestro.models.baseline.paper",
    "count_parameters": "maestro.models.baseline.paper",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
