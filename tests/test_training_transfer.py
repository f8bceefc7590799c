import pytest
import torch

from maestro.data.preprocess import build_preprocess_config
from maestro.training.config import DataConfig
from maestro.training.data import ShardDataModule
from maestro.training.transfer import tensors_to_device


def _batch() -> dict:
    meta = [{"patch_id": "a", "rasters": {"aerial": {"transform": [0.2, 0, 1, 0, -0.2, 2]}}}]
    return {
        "inputs": {"aerial": torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 2, 2)},
        "labels": torch.ones(1, 2, 2),
        "padded": False,
        "meta": meta,
    }


def test_tensors_move_and_the_metadata_stays_on_the_host_untouched():
    batch = _batch()
    moved = tensors_to_device(batch, torch.device("meta"))
    assert moved["inputs"]["aerial"].is_meta and moved["labels"].is_meta
    assert moved["meta"] is batch["meta"] and moved["padded"] is False
    assert not batch["labels"].is_meta  # the host batch is not modified


def test_the_data_module_uses_it_for_lightnings_transfer(toy_shards):
    module = ShardDataModule(DataConfig(train=str(toy_shards)), build_preprocess_config(["aerial"]))
    moved = module.transfer_batch_to_device(_batch(), torch.device("meta"), 0)
    assert moved["inputs"]["aerial"].is_meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_copies_on_the_side_stream_are_ready_for_the_compute_stream():
    device = torch.device("cuda")
    batch = _batch()
    batch["inputs"]["aerial"] = batch["inputs"]["aerial"].pin_memory()
    moved = tensors_to_device(batch, device)
    scaled = moved["inputs"]["aerial"].float() / 255  # queued on the current stream, after the wait
    torch.testing.assert_close(scaled.cpu(), batch["inputs"]["aerial"].float() / 255)
    assert moved["meta"] is batch["meta"]
