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
