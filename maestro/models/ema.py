"""Exponential moving average of the model weights, used for evaluation (docs/method.md).

timm's :class:`~timm.utils.ModelEmaV3` keeps the copy and the decay warm-up; :class:`ModelEma`
replaces its update, which builds both models' state dicts on every step, by a foreach lerp over
tensors found once (using no private timm method: those change between releases).
:func:`create_ema` fixes the defaults and makes sure the copy never receives gradients nor ends up
in an optimiser that iterates ``parameters()`` of a module holding it.
"""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


def _slots(module: nn.Module) -> list[tuple[dict[str, torch.Tensor], str]]:
    """Where each parameter and buffer of ``module`` lives, in ``state_dict`` order: a module's own
    ``_parameters`` / ``_buffers`` dict and the key in it."""
    slots = []
    for _, sub in module.named_modules(remove_duplicate=False):
        slots += [(sub._parameters, key) for key, value in sub._parameters.items() if value is not None]
        slots += [
            (sub._buffers, key)
            for key, value in sub._buffers.items()
            if value is not None and key not in sub._non_persistent_buffers_set
        ]
    return slots


class _Plan:
    """The tensors one update averages (EMA copy, model), and the slots they were read from."""

    def __init__(self, model: nn.Module, ema_slots: list, model_slots: list):
        self.model, self.slots = model, ema_slots + model_slots
        self.ema_values = [d[k] for d, k in ema_slots]
        self.model_values = [d[k] for d, k in model_slots]

    def current(self) -> bool:
        """Whether every slot still holds the tensor read from it."""
        values = self.ema_values + self.model_values
        return all(slot[key] is value for (slot, key), value in zip(self.slots, values, strict=True))


class ModelEma(ModelEmaV3):
    """timm's EMA, averaging tensors listed once per model instead of two state dicts per step.

    timm builds both models' ``state_dict()`` on every update: on a loaded GPU host that cost the
    training loop ~40 ms per step for the medium MAE (622 tensors). The lists are checked against
    the modules' slots on every update (an identity test per tensor) and built again when a
    tensor was replaced (``model.to()``, a reassignment), so nothing is ever averaged stale.
    """

    _plan: _Plan | None = None

    def _tensors(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        plan = self._plan
        if plan is not None and plan.model is model and plan.current():
            return plan.ema_values, plan.model_values
        ema_slots, model_slots = _slots(self.module), _slots(model)
        if [key for _, key in ema_slots] != [key for _, key in model_slots]:
            raise ValueError("the EMA copy and the model do not have the same parameters and buffers")
        seen: set[int] = set()  # a tied tensor is averaged once
        kept = [i for i, (d, k) in enumerate(model_slots) if not (id(d[k]) in seen or seen.add(id(d[k])))]
        self._plan = _Plan(model, [ema_slots[i] for i in kept], [model_slots[i] for i in kept])
        return self._plan.ema_values, self._plan.model_values

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        ema_lerp, model_lerp = [], []
        for ema_value, model_value in zip(*self._tensors(model), strict=True):
            if self.device is not None or model_value.dtype != ema_value.dtype:
                model_value = model_value.to(device=self.device, dtype=ema_value.dtype)
            if ema_value.is_floating_point():
                ema_lerp.append(ema_value)
                model_lerp.append(model_value)
            else:
                ema_value.copy_(model_value)
        if self.foreach:
            torch._foreach_lerp_(ema_lerp, model_lerp, weight=1.0 - decay)
        else:
            for ema_value, model_value in zip(ema_lerp, model_lerp, strict=True):
                ema_value.lerp_(model_value, weight=1.0 - decay)


def create_ema(
    model: nn.Module,
    decay: float = 0.9999,
    warmup: bool = True,
    device: torch.device | str | None = None,
) -> ModelEma:
    """EMA copy of ``model``; call ``ema.update(model, step)`` after each optimiser step.

    With ``warmup`` the decay ramps up from 0 (timm's schedule), so early EMA weights follow the
    model instead of staying stuck near the random initialisation. The averaged model is
    ``ema.module`` (in eval mode).
    """
    ema = ModelEma(
        model,
        decay=decay,
        use_warmup=warmup,
        device=torch.device(device) if isinstance(device, str) else device,
    )
    ema.requires_grad_(False)
    return ema
