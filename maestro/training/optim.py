"""AdamW + OneCycle, the optimiser and schedule of the reference MAESTRO training (docs/method.md, "Optimisation").

Their settings, :class:`~maestro.training.config.OptimConfig`, live with the other config sections
so that configs load without torch.
"""

from __future__ import annotations

import torch
from torch import nn

from maestro.training.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups by weight decay and, with ``layer_decay < 1``, by depth.

    No weight decay on biases, norms and other 1-D params, nor on the parameters the model names
    in ``no_weight_decay()`` (timm's convention: full names as from ``named_parameters``, e.g.
    learned tokens). Layer-wise decay reads the model's ``layer_id(name)`` (0 = input embedding,
    ``num_layers - 1`` = head) and scales each group's lr by ``lr_scale``.
    """
    exempt = model.no_weight_decay() if callable(getattr(model, "no_weight_decay", None)) else set()
    layered = layer_decay < 1.0 and callable(getattr(model, "layer_id", None))
    top = model.num_layers - 1 if layered else 0
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = not (param.ndim <= 1 or name.endswith(".bias") or name in exempt)
        layer = model.layer_id(name) if layered else 0
        group = groups.setdefault(
            (decays, layer),
            {
                "params": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr_scale": layer_decay ** (top - layer),
            },
        )
        group["params"].append(param)
    ordered = sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    return [group for _, group in ordered]


def build_optimizer(
    model: nn.Module, config: OptimConfig, global_batch: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a OneCycle schedule stepped every optimizer step."""
    peak = config.peak_lr(global_batch)
    groups = param_groups(model, config.weight_decay, config.layer_decay)
    # Fused on GPUs: one kernel per step instead of a chain of foreach ops, each of which the
    # training loop must launch from Python (measured: ~8 % of the pretraining loop's host time).
    fused = all(p.is_cuda for group in groups for p in group["params"]) or None
    optimizer = torch.optim.AdamW(
        groups, lr=peak, betas=config.betas, weight_decay=config.weight_decay, fused=fused
    )
    # final lr = peak / (start_div * final_div); ~0 means 1e-4 of the starting lr.
    final_div = 1e4 if config.end_fraction == 0 else 1.0 / (config.start_div * config.end_fraction)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[peak * group["lr_scale"] for group in groups],
        total_steps=max(total_steps, 2),
        pct_start=config.warmup_fraction,
        anneal_strategy="cos",
        div_factor=config.start_div,
        final_div_factor=final_div,
        cycle_momentum=False,  # keep AdamW's betas as configured; OneCycle would otherwise cycle beta1
    )
    return optimizer, scheduler
