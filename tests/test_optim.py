import math

import pytest
import torch

from maestro.errors import ConfigError
from maestro.training.optim import OptimConfig, build_optimizer, param_groups


def _lrs(config: OptimConfig, steps: int, global_batch: int = 12) -> list[float]:
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, config, global_batch=global_batch, total_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_scaling_warmup_and_cosine_to_zero():
    config = OptimConfig(base_lr=3e-5)
    lrs = _lrs(config, 100, global_batch=12)
    peak = 3e-5 * math.sqrt(12 / 3)
    assert lrs[0] == pytest.approx(peak / 1000)
    assert max(lrs) == pytest.approx(peak, rel=1e-3)
    assert lrs.index(max(lrs)) in (19, 20)
    assert lrs[-1] < peak * 1e-3


def test_finetune_schedule_ends_at_half_peak_and_keeps_betas():
    config = OptimConfig(base_lr=1e-5, end_fraction=0.5)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, config, global_batch=3, total_steps=50)
    for _ in range(49):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-5, rel=1e-2)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert optimizer.param_groups[1]["weight_decay"] == 0.0  # biases are not decayed


class _WithToken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 2)
        self.token = torch.nn.Parameter(torch.zeros(2, 3))

    def no_weight_decay(self) -> set[str]:
        return {"token"}


def test_parameters_named_by_no_weight_decay_are_not_decayed():
    model = _WithToken()
    decay, no_decay = param_groups(model, 0.05)
    assert [p is model.proj.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(model.token), id(model.proj.bias)}
    # Without the method, only the 1-D / bias rule applies: a 2-D token is decayed.
    plain = torch.nn.Module()
    plain.token = torch.nn.Parameter(torch.zeros(2, 3))
    assert param_groups(plain, 0.05)[0]["params"][0] is plain.token


def test_bad_optim_values_fail_without_their_section_prefix():
    with pytest.raises(ConfigError, match="^base_lr must be > 0$"):
        OptimConfig(base_lr=0)
    with pytest.raises(ConfigError, match=r"^warmup_fraction must be in \(0, 1\)$"):
        OptimConfig(warmup_fraction=1.0)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_adamw_is_fused_only_when_every_parameter_is_on_a_gpu(device):
    model = torch.nn.Linear(3, 2).to(device)
    optimizer, _ = build_optimizer(model, OptimConfig(), global_batch=3, total_steps=10)
    assert bool(optimizer.defaults["fused"]) is (device == "cuda")
