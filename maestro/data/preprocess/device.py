"""The last preprocessing step for batches whose integer rasters travelled unscaled.

With ``PreprocessConfig.scale_on_device`` the loader ships aerial, SPOT, S2 and historical imagery
in their on-disk integer dtypes; once the batch is on its device (GPU or CPU), :func:`scale_batch`
applies the registry's scaling to them, with the same formula the workers would have used, after
putting their bands in network order when the workers left them in disk order
(``ResolvedInput.device_band_order``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from maestro.data.preprocess.config import PreprocessConfig
from maestro.modalities import MODALITIES
from maestro.sample import INPUTS


@functools.cache
def band_index(order: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``order`` as an index tensor on ``device``, built once per process: building it for every
    batch copies from pageable host memory, which on a GPU waits for all the work already queued
    (a full sync per training step)."""
    return torch.tensor(order, device=device)


def scale_batch(batch: Mapping[str, Any], config: PreprocessConfig) -> Mapping[str, Any]:
    """Scale the integer inputs of a collated batch (B, T, C, H, W) into network band order and
    scale (others are left as they are: they were scaled in the workers). Returns the batch,
    updated in place."""
    inputs = batch[INPUTS]
    for key, values in inputs.items():
        if values.is_floating_point():
            continue
        spec = config.spec(key)
        if spec.device_band_order is not None:
            values = values.index_select(-3, band_index(spec.device_band_order, values.device))
        inputs[key] = MODALITIES[key].scaling.tensor(values, spec.bands)
    return batch
