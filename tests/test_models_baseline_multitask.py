"""One Swin-UTAE for land cover and crop type: a decoder per task and the weighted multi-task loss."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import tiny_config

from finetune.module import segmentation_loss
from finetune.multitask import multitask_loss
from maestro.models.baseline import SwinUTAE
from maestro.models.synthetic import synthetic_batch

pytestmark = pytest.mark.usefixtures("single_thread")
TASKS = {"lc": 15, "lpis": 23}


def run(modalities: tuple[str, ...], weights: dict[str, float]) -> tuple[SwinUTAE, torch.Tensor, dict]:
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(modalities, tasks=TASKS, aux_heads=True)).eval()
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    outputs = model.forward_tasks(batch["inputs"], batch["times"], batch["valid"])
    generator = torch.Generator().manual_seed(0)
    targets = {
        task: torch.randint(0, classes, (2, 32, 32), generator=generator) for task, classes in TASKS.items()
    }
    loss, _ = multitask_loss(outputs, targets, weights, aux_weight=0.3)
    expected = sum(weights[t] * segmentation_loss(outputs[t], targets[t], 0.3)[0] for t in TASKS)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    return model, loss, outputs


@pytest.mark.parametrize("modalities", [("aerial", "s2"), ("s2", "s1_asc")])
def test_every_task_gets_its_head_and_its_weighted_loss(modalities: tuple[str, ...]) -> None:
    model, _, outputs = run(modalities, {"lc": 1.0, "lpis": 0.5})
    assert set(outputs) == set(TASKS) and set(model.decoders) == set(TASKS)
    for task, classes in TASKS.items():
        assert outputs[task]["logits"].shape == (2, classes, 32, 32)
        assert set(outputs[task]["aux"]) == set(modalities)
        assert all(p.grad.abs().sum() > 0 for p in model.decoders[task].parameters() if p.ndim > 1)
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    torch.testing.assert_close(
        model(batch["inputs"], batch["times"], batch["valid"])["logits"],
        model.forward_tasks(batch["inputs"], batch["times"], batch["valid"])["lc"]["logits"],
    )


def test_a_task_weighted_zero_trains_nothing_of_its_own() -> None:
    model, _, _ = run(("aerial", "s2"), {"lc": 1.0, "lpis": 0.0})
    assert all((p.grad == 0).all() for p in model.decoders["lpis"].parameters())
    assert all((p.grad == 0).all() for heads in model.aux_heads.values() for p in heads["lpis"].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.decoders["lc"].parameters())


def test_a_task_without_output_is_an_error() -> None:
    with pytest.raises(KeyError, match="lpis"):
        multitask_loss(
            {"lc": {"logits": torch.zeros(1, 15, 2, 2)}}, {"lpis": torch.zeros(1, 2, 2, dtype=torch.long)}
        )
