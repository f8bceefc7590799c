import pytest

from maestro.models.flops import count_flops
from maestro.models.mae import MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")


def test_count_flops_forward_and_backward():
    config = tiny_config()
    model = MaestroMAE(config)
    batch = synthetic_batch(config)
    flops = count_flops(model, batch)
    assert flops["forward"] > 0 and flops["backward"] > flops["forward"]
    assert flops["total"] == flops["forward"] + flops["backward"]
    assert all(p.grad is None for p in model.parameters())
    # lower bound: the qkv projections of the 3 encoder blocks on 2 x 12 visible tokens
    assert flops["forward"] > 2 * 2 * 12 * 64 * 192 * 3
    forward_only = count_flops(model, batch, backward=False)
    assert forward_only["backward"] == 0 and forward_only["forward"] == flops["forward"]


def test_flops_grow_with_batch():
    config = tiny_config()
    model = MaestroMAE(config)
    small = count_flops(model, synthetic_batch(config, batch_size=1), backward=False)["forward"]
    large = count_flops(model, synthetic_batch(config, batch_size=4), backward=False)["forward"]
    assert large == pytest.approx(4 * small, rel=0.01)
