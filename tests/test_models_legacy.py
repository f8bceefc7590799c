import torch

from maestro.hub.weights import upgrade_pretrain_checkpoint
from maestro.models.config import MAEConfig
from maestro.models.legacy import RENAMED_PREFIXES
from maestro.models.mae import MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config


def _pre_split(key: str, prefix: str) -> str:
    """The name a current MAE key had before the encoder/MAE split."""
    for old, current in RENAMED_PREFIXES:
        if key.startswith(prefix + current):
            return prefix + old + key[len(prefix + current) :]
    return key


def test_a_pre_split_pretrain_checkpoint_is_mapped_and_loads_strictly():
    config = tiny_config()
    model = MaestroMAE(config)
    flat_model_config = {
        **config.encoder.to_dict(),
        **{k: v for k, v in config.to_dict().items() if k != "encoder"},
    }
    checkpoint = {
        "hyper_parameters": {"config": {"model": flat_model_config}},
        "state_dict": {_pre_split(f"model.{k}", "model."): v for k, v in model.state_dict().items()},
        "ema_state_dict": {_pre_split(f"module.{k}", "module."): v for k, v in model.state_dict().items()},
    }
    assert any(k.startswith("model.embed.") for k in checkpoint["state_dict"])
    assert upgrade_pretrain_checkpoint(checkpoint)
    restored = MaestroMAE(MAEConfig.from_dict(checkpoint["hyper_parameters"]["config"]["model"]))
    restored.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    ema = {k.removeprefix("module."): v for k, v in checkpoint["ema_state_dict"].items()}
    assert set(ema) == set(model.state_dict())
    batch = synthetic_batch(config)
    generator = torch.Generator().manual_seed(0)
    expected = model(**batch, generator=generator)["loss"]
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(restored(**batch, generator=generator)["loss"], expected)
    assert not upgrade_pretrain_checkpoint(checkpoint)  # already current: untouched
