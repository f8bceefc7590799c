import dataclasses
import logging
import shutil

import pytest

from maestro.errors import DataError
from maestro.models.config import EncoderConfig
from maestro.training.config import DataConfig
from maestro.training.data import ShardDataModule, check_shards, preprocess_for

ENCODER = EncoderConfig(
    modalities=("aerial", "s2"),
    overrides={
        "aerial": {"bands": ["R", "G", "B"], "patch_size": 128},
        "s2": {"num_dates": 3, "patch_size": 5},
    },
    size="tiny",
    width=64,
    depth=2,
    inter_depth=1,
    grid_size=20,
)


def test_preprocessing_follows_the_model_specs():
    preprocess = preprocess_for(ENCODER.specs, cloud_avoidance=False)
    assert preprocess.modalities == ("aerial", "s2")
    assert preprocess.spec("aerial").bands == ("R", "G", "B")
    assert preprocess.spec("s2").num_dates == 3
    assert preprocess.spec("s2").bands == ENCODER.specs["s2"].bands
    assert preprocess.cloud_avoidance is False


def test_members_default_to_inputs_and_their_companions_and_can_add_labels():
    data = DataConfig(train="unused")
    preprocess = preprocess_for(ENCODER.specs)
    assert ShardDataModule(data, preprocess).members == ("aerial", "s2", "s2_mask")
    assert ShardDataModule(data, preprocess, members=["aerial", "s2", "s2_mask", "lc"]).members[-1] == "lc"


def test_batches_have_the_shapes_the_model_expects(toy_shards):
    data = DataConfig(
        train=str(toy_shards),
        val=str(toy_shards),
        batch_size=2,
        num_workers=0,
        batches_per_epoch=1,
        shuffle_buffer=4,
    )
    module = ShardDataModule(data, preprocess_for(ENCODER.specs))
    batch = next(iter(module.train_dataloader()))
    assert tuple(batch["inputs"]["aerial"].shape) == (2, 1, 3, 512, 512)
    assert tuple(batch["inputs"]["s2"].shape[:3]) == (2, 3, ENCODER.specs["s2"].num_bands)
    assert all(b["inputs"]["aerial"].shape[1:] == (1, 3, 512, 512) for b in module.val_dataloader())


@pytest.fixture
def shard_copy(toy_shards, tmp_path):
    """A writable copy of the toy shards (manifest + tars)."""
    out = tmp_path / "shards"
    shutil.copytree(toy_shards, out)
    return out


def _first_train_shard(shards):
    return sorted(shards.glob("train-*.tar"))[0]


def test_a_truncated_shard_is_refused_at_start_naming_it(shard_copy):
    shard = _first_train_shard(shard_copy)
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    assert check_shards(str(shard_copy), "val", "size") == []
    [problem] = check_shards(str(shard_copy), "train", "size")
    assert str(shard) in problem and "manifest says" in problem
    data = DataConfig(train=str(shard_copy), val=str(shard_copy), batch_size=2, num_workers=0)
    with pytest.raises(DataError, match=f"do not match their manifest: {shard}: size"):
        ShardDataModule(data, preprocess_for(ENCODER.specs)).setup("fit")
    ShardDataModule(dataclasses.replace(data, verify="none"), preprocess_for(ENCODER.specs)).setup("fit")


def test_full_verification_compares_checksums(shard_copy):
    shard = _first_train_shard(shard_copy)
    with shard.open("r+b") as handle:  # same size, one byte changed
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert check_shards(str(shard_copy), "train", "size") == []
    [problem] = check_shards(str(shard_copy), "train", "full")
    assert str(shard) in problem and "sha256 mismatch" in problem
    # Ranks share the checksumming: rank 1 of 2 reads the other shards only.
    assert check_shards(str(shard_copy), "train", "full", rank=1, world_size=2) == []


def test_shards_without_a_manifest_are_not_checked_before_reading(shard_copy, caplog):
    shard = _first_train_shard(shard_copy)
    with shard.open("r+b") as handle:
        handle.truncate(100)
    with caplog.at_level(logging.INFO, logger="maestro.training.data"):
        assert check_shards(str(shard_copy / "train-{000000..000001}.tar"), None, "full") == []
    assert "no local manifest" in caplog.text


def test_integer_inputs_are_scaled_after_the_transfer(toy_shards):
    import torch

    from maestro.data.preprocess import build_preprocess_config
    from maestro.training.config import DataConfig
    from maestro.training.data import ShardDataModule

    module = ShardDataModule(DataConfig(train=str(toy_shards)), build_preprocess_config(["aerial", "s2"]))
    assert not module.on_gpu  # on CPU the workers scale (in parallel); only GPU runs ship integers
    raw = {
        "inputs": {
            "aerial": torch.full((1, 1, 4, 2, 2), 255, dtype=torch.uint8),
            "s2": torch.full((1, 2, 10, 2, 2), 5000, dtype=torch.int32),
        }
    }
    out = module.on_after_batch_transfer(raw, 0)
    assert out["inputs"]["aerial"].dtype == torch.float32 and bool((out["inputs"]["aerial"] == 1).all())
    assert bool((out["inputs"]["s2"] == 1).all())


def test_padding_is_read_on_the_host_before_the_transfer():
    import torch

    from maestro.training.data import padding_on_host

    full = {"valid": {"s2": torch.ones(2, 3, dtype=torch.bool), "dem": torch.ones(2, 1, dtype=torch.bool)}}
    assert padding_on_host(full) is False
    full["valid"]["s2"][1, 2] = False
    assert padding_on_host(full) is True
    assert padding_on_host({"inputs": {}}) is None


@pytest.mark.parametrize(
    ("pin_memory", "on_gpu", "pinned"),
    [
        (None, True, True),
        (False, True, False),
        (True, True, True),
        (None, False, False),
        (True, False, False),
    ],
)
def test_batches_are_pinned_on_gpus_unless_turned_off(toy_shards, monkeypatch, pin_memory, on_gpu, pinned):
    from maestro.data.preprocess import build_preprocess_config

    monkeypatch.setattr(ShardDataModule, "on_gpu", property(lambda self: on_gpu))
    config = DataConfig(train=str(toy_shards), num_workers=0, pin_memory=pin_memory)
    module = ShardDataModule(config, build_preprocess_config(["aerial"]))
    assert module.train_dataloader().shards.config.pin_memory is pinned


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (16, 4)])
def test_loader_workers_default_to_the_cores_this_process_may_use(monkeypatch, cores, workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert DataConfig(train="unused").num_workers == workers
    assert DataConfig(train="unused", num_workers=8).num_workers == 8  # an explicit count is kept


def test_the_default_loader_on_two_cores_draws_no_worker_count_warning(toy_shards, monkeypatch, recwarn):
    """torch warns at every loader start (each epoch, validation, test) when there are more
    workers than cores; the default (4 before) now fits the machine."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    data = DataConfig(train=str(toy_shards), batch_size=1, batches_per_epoch=1, shuffle_buffer=1)
    next(iter(ShardDataModule(data, preprocess_for(ENCODER.specs)).train_dataloader()))
    assert not [w for w in recwarn if "worker" in str(w.message)], [str(w.message) for w in recwarn]
