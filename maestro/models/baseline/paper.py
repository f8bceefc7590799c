"""The FLAIR-HUB paper's Swin-UTAE configurations, as data: inputs, task and published figures.

One frozen row per configuration of the land-cover (LC-A ... LC-L, LC-ALL) and crop-type (LPIS-A
... LPIS-K, level 1) result tables of Garioud et al., "FLAIR-HUB: Large-scale Multimodal Dataset
for Land Cover and Crop Mapping" (arXiv 2506.07080): the modalities, the parameter count in
millions and the test OA / mIoU in percent. "S1" in the paper is both orbits (``s1_asc`` and
``s1_des``, one U-TAE each). :func:`baseline_config` turns a row into a model config; tests build
and step every row, and BENCHMARKS.md compares our parameter counts with ``params_m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maestro.modalities import MODALITIES
from maestro.models.baseline.config import SwinUTAEConfig
from maestro.models.baseline.model import SwinUTAE
from maestro.models.config import EncoderConfig
from maestro.tasks import get_task

S1 = ("s1_asc", "s1_des")


@dataclass(frozen=True)
class PaperConfiguration:
    """One row of the paper's result tables."""

    key: str
    task: str
    """``lc`` or ``lpis`` (level 1)."""
    modalities: tuple[str, ...]
    params_m: float
    oa: float
    miou: float


_ROWS = (
    PaperConfiguration("LC-A", "lc", ("aerial",), 89.4, 77.5, 64.1),
    PaperConfiguration("LC-B", "lc", ("aerial", "dem"), 181.4, 78.1, 65.1),
    PaperConfiguration("LC-C", "lc", ("aerial", "dem", "spot"), 270.6, 78.2, 65.2),
    PaperConfiguration("LC-D", "lc", ("aerial", "s2"), 93.9, 77.6, 64.7),
    PaperConfiguration("LC-E", "lc", ("aerial", *S1), 95.8, 77.7, 64.5),
    PaperConfiguration("LC-F", "lc", ("aerial", "s2", *S1), 97.7, 77.7, 64.9),
    PaperConfiguration("LC-G", "lc", ("s2",), 0.9, 57.8, 34.2),
    PaperConfiguration("LC-H", "lc", S1, 1.8, 54.5, 28.2),
    PaperConfiguration("LC-I", "lc", ("spot",), 89.2, 64.1, 43.5),
    PaperConfiguration("LC-J", "lc", ("dem",), 89.4, 67.4, 51.2),
    PaperConfiguration("LC-K", "lc", ("aerial", "hist"), 181.4, 77.6, 64.3),
    PaperConfiguration("LC-L", "lc", ("aerial", "dem", "spot", "s2", *S1), 276.4, 78.2, 65.8),
    PaperConfiguration("LC-ALL", "lc", ("aerial", "dem", "spot", "s2", *S1, "hist"), 365.8, 78.2, 65.6),
    PaperConfiguration("LPIS-A", "lpis", ("aerial",), 89.4, 86.6, 24.4),
    PaperConfiguration("LPIS-B", "lpis", ("aerial", "spot"), 181.2, 87.1, 26.1),
    PaperConfiguration("LPIS-C", "lpis", ("aerial", "s2"), 93.9, 87.5, 29.8),
    PaperConfiguration("LPIS-D", "lpis", ("aerial", "s2", *S1), 97.7, 88.0, 36.1),
    PaperConfiguration("LPIS-E", "lpis", ("aerial", "spot", "s2"), 183.1, 87.6, 30.3),
    PaperConfiguration("LPIS-F", "lpis", ("s2",), 0.9, 85.3, 23.8),
    PaperConfiguration("LPIS-G", "lpis", S1, 1.8, 84.5, 18.1),
    PaperConfiguration("LPIS-H", "lpis", ("s2", *S1), 2.8, 84.9, 23.8),
    PaperConfiguration("LPIS-I", "lpis", ("spot", "s2", *S1), 97.5, 87.2, 39.2),
    PaperConfiguration("LPIS-J", "lpis", ("aerial", "spot", "s2", *S1), 186.9, 88.0, 35.4),
    PaperConfiguration("LPIS-K", "lpis", ("spot",), 89.2, 84.5, 15.1),
)

PAPER_CONFIGURATIONS: dict[str, PaperConfiguration] = {row.key: row for row in _ROWS}
"""Every configuration of the paper's tables by id."""

assert all(key in MODALITIES for row in _ROWS for key in row.modalities)


def get_paper_configuration(key: str) -> PaperConfiguration:
    """Registry lookup with an error that lists the valid ids."""
    try:
        return PAPER_CONFIGURATIONS[key]
    except KeyError:
        raise KeyError(
            f"unknown configuration {key!r}; configurations: {list(PAPER_CONFIGURATIONS)}"
        ) from None


def baseline_config(key: str, encoder: EncoderConfig | None = None, **changes: Any) -> SwinUTAEConfig:
    """The model config of a paper configuration at full size (registry inputs, 512 px labels).

    ``encoder`` replaces the registry-default inputs (e.g. smaller images for tests; its modalities
    must be the row's); ``changes`` are other :class:`SwinUTAEConfig` fields.
    """
    row = get_paper_configuration(key)
    encoder = encoder if encoder is not None else EncoderConfig(modalities=row.modalities)
    if encoder.modalities != row.modalities:
        raise ValueError(
            f"{key} takes {list(row.modalities)}, the encoder config has {list(encoder.modalities)}"
        )
    classes = get_task(row.task).target(1).num_classes
    fields: dict[str, Any] = {"tasks": {row.task: classes}, **changes}
    return SwinUTAEConfig(encoder=encoder, **fields)


def count_parameters(config: SwinUTAEConfig) -> int:
    """Parameters of the model ``config`` describes, built on the meta device (no memory, no weights)."""
    config = config.replace(pretrained=False)
    with torch.device("meta"):
        model = SwinUTAE(config)
    return sum(parameter.numel() for parameter in model.parameters())
