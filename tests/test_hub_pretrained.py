"""save_pretrained / from_pretrained on local folders: exact round trips, strict loading, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from maestro.errors import ConfigError
from maestro.hub import segmentation_task
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from maestro.models import MaestroEncoder, MaestroMAE, from_pretrained
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import synthetic_batch, tiny_config


def _segmenter(seed: int = 0) -> MaestroSegmenter:
    torch.manual_seed(seed)
    config = SegmenterConfig(
        encoder=tiny_config().encoder, num_classes=15, label_size=32, decoder_channels=16
    )
    return MaestroSegmenter(config).eval()


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(tiny_config(), batch_size=2, seed=3)


def test_encoder_round_trip_is_bit_identical(tmp_path, batch, single_thread):
    torch.manual_seed(0)
    encoder = MaestroEncoder(tiny_config().encoder).eval()
    folder = encoder.save_pretrained(tmp_path / "encoder")
    assert sorted(p.name for p in folder.iterdir()) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    document = json.loads((folder / CONFIG_NAME).read_text())
    assert (
        document["model_type"] == "maestro-encoder" and "suite_version" in document and "task" not in document
    )

    loaded = MaestroEncoder.from_pretrained(folder)
    assert not loaded.training
    with torch.no_grad():
        expected = encoder(batch["inputs"], batch["times"], batch["valid"])
        got = loaded(batch["inputs"], batch["times"], batch["valid"])
    for key in expected.tokens:
        assert torch.equal(expected.tokens[key], got.tokens[key])


def test_mae_round_trip_is_bit_identical(tmp_path, batch, single_thread):
    torch.manual_seed(0)
    mae = MaestroMAE(tiny_config()).eval()
    mae.save_pretrained(tmp_path / "mae")
    loaded = from_pretrained(tmp_path / "mae")
    assert isinstance(loaded, MaestroMAE)
    with torch.no_grad():
        expected = mae(
            batch["inputs"], batch["times"], batch["valid"], generator=torch.Generator().manual_seed(1)
        )
        got = loaded(
            batch["inputs"], batch["times"], batch["valid"], generator=torch.Generator().manual_seed(1)
        )
    assert torch.equal(expected["loss"], got["loss"])


def test_segmenter_round_trip_is_bit_identical_and_keeps_the_task(tmp_path, batch, single_thread):
    segmenter = _segmenter()
    task = segmentation_task("lc", 1)
    segmenter.save_pretrained(tmp_path / "seg", task=task)
    document = json.loads((tmp_path / "seg" / CONFIG_NAME).read_text())
    assert document["task"]["name"] == "lc" and document["task"]["level"] == 1
    assert document["task"]["class_names"][0] == "building" and len(document["task"]["class_names"]) == 15

    loaded = MaestroSegmenter.from_pretrained(tmp_path / "seg")
    with torch.no_grad():
        expected = segmenter(batch["inputs"], batch["times"], batch["valid"])["logits"]
        got = loaded(batch["inputs"], batch["times"], batch["valid"])["logits"]
    assert torch.equal(expected, got)


def test_the_encoder_class_takes_the_encoder_out_of_a_segmenter_or_mae(tmp_path):
    segmenter = _segmenter()
    segmenter.save_pretrained(tmp_path / "seg", task=segmentation_task("lc", 1))
    encoder = MaestroEncoder.from_pretrained(tmp_path / "seg")
    assert all(
        torch.equal(value, segmenter.encoder.state_dict()[key]) for key, value in encoder.state_dict().items()
    )
    with pytest.raises(ConfigError, match="holds a maestro-segmenter, not a maestro-mae"):
        MaestroMAE.from_pretrained(tmp_path / "seg")


def test_weights_that_do_not_fit_the_config_are_listed(tmp_path):
    torch.manual_seed(0)
    MaestroEncoder(tiny_config().encoder).save_pretrained(tmp_path / "enc", card=False)
    weights = tmp_path / "enc" / WEIGHTS_NAME
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    del state[dropped]
    state["surprise.weight"] = torch.zeros(1)
    save_file(state, str(weights), metadata={"format": "pt", "model_type": "maestro-encoder"})
    with pytest.raises(ConfigError) as error:
        from_pretrained(tmp_path / "enc")
    message = str(error.value)
    assert dropped in message and "surprise.weight" in message and "same export" in message


def test_a_config_of_another_size_is_refused(tmp_path):
    torch.manual_seed(0)
    MaestroEncoder(tiny_config().encoder).save_pretrained(tmp_path / "enc", card=False)
    config_file = tmp_path / "enc" / CONFIG_NAME
    document = json.loads(config_file.read_text())
    document["config"]["width"] = 128
    config_file.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="wrong shape"):
        from_pretrained(tmp_path / "enc")


def test_config_and_weights_of_different_model_types_are_refused(tmp_path):
    torch.manual_seed(0)
    MaestroEncoder(tiny_config().encoder).save_pretrained(tmp_path / "enc", card=False)
    MaestroMAE(tiny_config()).save_pretrained(tmp_path / "mae", card=False)
    (tmp_path / "enc" / CONFIG_NAME).write_text((tmp_path / "mae" / CONFIG_NAME).read_text())
    with pytest.raises(ConfigError, match="come from different models"):
        from_pretrained(tmp_path / "enc")


def test_a_segmenter_task_must_name_its_classes(tmp_path):
    with pytest.raises(ConfigError, match="names 23 classes but the segmenter predicts 15"):
        _segmenter().save_pretrained(tmp_path / "seg", task=segmentation_task("lpis", 1))
    with pytest.raises(ConfigError, match="task= is for segmenters"):
        MaestroEncoder(tiny_config().encoder).save_pretrained(
            tmp_path / "enc", task=segmentation_task("lc", 1)
        )


def test_sources_that_are_neither_folders_nor_hub_ids(tmp_path):
    (tmp_path / "weights.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="maestro publish"):
        from_pretrained(tmp_path / "weights.ckpt")
    with pytest.raises(FileNotFoundError, match="not a Hub id"):
        from_pretrained(tmp_path / "missing" / "deeper")
    with pytest.raises(ConfigError, match="applies to Hub repos"):
        from_pretrained(tmp_path, revision="main")
