"""Multi-task loss: several label sets (e.g. land cover and crop type) trained by one model.

``loss = sum_t w_t * (L_main,t + beta * mean_m L_aux,t,m)``, each task's term being the
single-task :func:`finetune.module.segmentation_loss` (the method of docs/method.md, "Supervised
baseline: Swin-UTAE"). Models give one output per task, as
:meth:`maestro.models.baseline.SwinUTAE.forward_tasks` does. The ``finetune`` command trains one
task per run; this is the loss a multi-task run uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from finetune.module import segmentation_loss


def multitask_loss(
    outputs: Mapping[str, Mapping[str, Any]],
    targets: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    aux_weight: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum over ``targets``' tasks (weight 1 where ``weights`` has none) and the logged parts,
    ``{task}/main``, ``{task}/aux_{modality}`` and ``{task}/loss``."""
    missing = sorted(set(targets) - set(outputs))
    if missing:
        raise KeyError(f"no model output for tasks {missing}; outputs are for {sorted(outputs)}")
    weights = weights or {}
    total: Tensor | None = None
    parts: dict[str, Tensor] = {}
    for task, target in targets.items():
        loss, task_parts = segmentation_loss(dict(outputs[task]), target, aux_weight)
        parts.update({f"{task}/{name}": value for name, value in task_parts.items()})
        parts[f"{task}/loss"] = loss
        term = weights.get(task, 1.0) * loss
        total = term if total is None else total + term
    if total is None:
        raise ValueError("multitask_loss needs at least one task")
    return total, parts
