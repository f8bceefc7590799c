"""Exponential moving average of the model weights, used for evaluation (docs/method.md).

timm's :class:`~timm.utils.ModelEmaV3` already does the work (foreach lerp, decay warm-up,
optional CPU placement, bf16 stochastic rounding); this helper only fixes the defaults and makes
sure the copy never receives gradients nor ends up in an optimiser that iterates
``parameters()`` of a module holding it.
"""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


def create_ema(
    model: nn.Module,
    decay: float = 0.9999,
    warmup: bool = True,
    device: torch.device | str | None = None,
) -> ModelEmaV3:
    """EMA copy of ``model``; call ``ema.update(model, step)`` after each optimiser step.

    With ``warmup`` the decay ramps up from 0 (timm's schedule), so early EMA weights follow the
    model instead of staying stuck near the random initialisation. The averaged model is
    ``ema.module`` (in eval mode).
    """
    ema = ModelEmaV3(
        model,
        decay=decay,
        use_warmup=warmup,
        device=torch.device(device) if isinstance(device, str) else device,
    )
    ema.requires_grad_(False)
    return ema
