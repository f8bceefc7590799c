import pytest

from maestro.config import from_dict
from maestro.errors import ConfigError
from maestro.training.config import DataConfig, TrainerConfig


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be >= 1"),
    ],
)
def test_data_values_are_checked_without_their_section_prefix(values, message):
    with pytest.raises(ConfigError) as info:
        DataConfig(train="shards", **values)
    assert str(info.value) == message
    # The loader names the section, once.
    with pytest.raises(ConfigError) as info:
        from_dict(DataConfig, {"train": "shards", **values}, where="data")
    assert message in str(info.value) and str(info.value).count("data") == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_epochs": 0}, "max_epochs must be >= 1"),
        ({"max_steps": 0}, "max_steps must be -1 or >= 1"),
        ({"max_steps": -2}, "max_steps must be -1 or >= 1"),
        ({"num_nodes": 0}, "num_nodes must be >= 1"),
        ({"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
        ({"checkpoint_every_n_steps": 0}, "checkpoint_every_n_steps must be >= 1"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
        ({"devices": "gpu0"}, "devices must be 'auto'"),
    ],
)
def test_trainer_values_are_checked_without_their_section_prefix(values, message):
    with pytest.raises(ConfigError) as info:
        TrainerConfig(**values)
    assert str(info.value).startswith(message)


def test_device_lists_and_counts_are_accepted():
    assert TrainerConfig(devices="0,1").devices == "0,1"
    assert TrainerConfig(devices=2).devices == 2
    assert from_dict(TrainerConfig, {"devices": "auto", "strategy": "ddp"}).strategy == "ddp"


def test_choices_are_checked_by_the_loader():
    with pytest.raises(ConfigError, match="data.verify: 'sha' is not one of"):
        from_dict(DataConfig, {"train": "shards", "verify": "sha"}, where="data")
    with pytest.raises(ConfigError, match="trainer.monitor_mode: 'best' is not one of"):
        from_dict(TrainerConfig, {"monitor_mode": "best"}, where="trainer")
