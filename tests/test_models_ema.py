import torch

from maestro.models.ema import create_ema
from maestro.models.mae import MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config


def test_ema_copy_is_frozen_and_follows_the_model():
    torch.manual_seed(0)
    config = tiny_config()
    model = MaestroMAE(config)
    ema = create_ema(model, decay=0.5, warmup=False)
    assert ema.module is not model and not ema.module.training
    assert not any(p.requires_grad for p in ema.parameters())
    assert all(p.requires_grad for p in model.parameters())

    before = ema.module.mask_tokens["aerial"].token.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.mask_tokens["aerial"].token, before + 0.5)

    with torch.no_grad():
        out = ema.module(**synthetic_batch(config))
    assert torch.isfinite(out["loss"])
    assert ema.module.config == config


def test_warmup_starts_from_the_model():
    model = MaestroMAE(tiny_config())
    ema = create_ema(model)
    assert ema.get_decay(step=1) == 0.0 and 0.0 < ema.get_decay(step=1000) < 0.9999


def test_update_matches_timms_state_dict_walk_and_follows_replaced_tensors():
    from timm.utils import ModelEmaV3
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    reference, ema = ModelEmaV3(model, decay=0.9, use_warmup=True), create_ema(model, decay=0.9)
    for step in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked += 1
        reference.update(model, step=step)
        ema.update(model, step=step)
    for (key, expected), actual in zip(
        reference.module.state_dict().items(), ema.module.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), key

    model[1].running_mean = torch.full((4,), 7.0)  # a replaced tensor is read from its slot again
    before, decay = ema.module[1].running_mean.clone(), ema.get_decay(step=100)
    ema.update(model, step=100)
    torch.testing.assert_close(ema.module[1].running_mean, before * decay + 7.0 * (1 - decay))


def test_tied_weights_are_averaged_once():
    from torch import nn

    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    model[1].weight = model[0].weight
    ema = create_ema(model, decay=0.5, warmup=False)
    before = ema.module[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, before + 1.0)
