"""FLOP counting for benchmarks: forward + backward through ``torch.utils.flop_counter``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, batch: Mapping[str, Any], backward: bool = True) -> dict[str, int]:
    """FLOPs of one training step of a MAE on a model-sample batch.

    ``batch`` holds ``inputs``, ``times`` and ``valid`` (:mod:`maestro.sample`); the model returns
    a dict with ``loss``. Returns ``{"forward", "backward", "total"}`` (matmul/conv/attention FLOPs
    as counted by PyTorch; elementwise ops are not counted). Gradients left on the model
    by the backward pass are cleared.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(batch["inputs"], batch["times"], batch.get("valid"))
        forward = counter.get_total_flops()
        if backward:
            output["loss"].backward()
    total = counter.get_total_flops()
    if backward:
        model.zero_grad(set_to_none=True)
    return {"forward": forward, "backward": total - forward, "total": total}
