"""The last preprocessing step for batches whose integer rasters travelled unscaled.

With ``PreprocessConfig.scale_on_device`` the loader ships aerial, SPOT, S2 and historical imagery
in their on-disk integer dtypes; once the batch is on its device (GPU or CPU), :func:`scale_batch`
applies the registry's scaling to them, with the same formula the workers would have used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maestro.data.preprocess.config import PreprocessConfig
from maestro.modalities import MODALITIES
from maestro.sample import INPUTS


def scale_batch(batch: Mapping[str, Any], config: PreprocessConfig) -> Mapping[str, Any]:
    """Scale the integer inputs of a collated batch in network band order (others are left as
    they are: they were scaled in the workers). Returns the batch, updated in place."""
    inputs = batch[INPUTS]
    for key, values in inputs.items():
        if values.is_floating_point():
            continue
        entry = MODALITIES[key]
        inputs[key] = entry.scaling.tensor(values, config.spec(key).bands)
    return batch
