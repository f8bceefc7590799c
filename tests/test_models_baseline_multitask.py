"""One Swin-UTAE for land cover and crop type: a decoder (and aux heads) per task, one shared encoder."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import tiny_config

from maestro.models.baseline import SwinUTAE
from maestro.models.synthetic import synthetic_batch

pytestmark = pytest.mark.usefixtures("single_thread")
TASKS = {"lc": 15, "lpis": 23}


@pytest.mark.parametrize("modalities", [("aerial", "s2"), ("s2", "s1_asc")])
def test_every_task_gets_its_head(modalities: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(modalities, tasks=TASKS, aux_heads=True)).eval()
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    outputs = model.forward_tasks(batch["inputs"], batch["times"], batch["valid"])
    assert set(outputs) == set(TASKS) and set(model.decoders) == set(TASKS)
    for task, classes in TASKS.items():
        assert outputs[task]["logits"].shape == (2, classes, 32, 32)
        assert set(outputs[task]["aux"]) == set(modalities)
    outputs["lpis"]["logits"].square().mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.decoders["lpis"].parameters() if p.ndim > 1)
    assert all(p.grad is None for p in model.decoders["lc"].parameters())
    torch.testing.assert_close(
        model(batch["inputs"], batch["times"], batch["valid"])["logits"], outputs["lc"]["logits"]
    )
