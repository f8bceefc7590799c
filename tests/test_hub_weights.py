"""Weights from every source, read by one module: run directories (a fine-tuning run's best.ckpt,
else the newest checkpoint), checkpoints (EMA or live), model folders of every type, the encoder
taken out of any of them, and pickles that are refused without ever being unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder, write_model_folder
from maestro.hub.weights import EMA_PREFIX, NETWORK_PREFIX, from_checkpoint, from_folder, load_weights
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.encoder import MaestroEncoder
from maestro.models.registry import MAESTRO_ENCODER, MAESTRO_MAE, MAESTRO_SEGMENTER
from maestro.models.zoo import load_encoder_weights


def _checkpoints(run: Path) -> dict[int, Path]:
    """Step -> checkpoint file of a run (links such as last.ckpt left out)."""
    steps = {}
    for path in (run / "checkpoints").glob("*.ckpt"):
        if not path.is_symlink():
            steps[int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])] = path
    return steps


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[key], b[key]) for key in a)


def _encoder_keys(config: EncoderConfig) -> set[str]:
    with torch.device("meta"):
        return set(MaestroEncoder(config, initialise=False).state_dict())


def test_a_run_directory_gives_the_ema_weights_of_its_newest_checkpoint(tiny_pretrain_run):
    steps = _checkpoints(tiny_pretrain_run)
    assert len(steps) >= 2, steps
    newest, oldest = steps[max(steps)], steps[min(steps)]
    weights = load_encoder_weights(tiny_pretrain_run)
    expected = _sub(
        torch.load(newest, map_location="cpu", weights_only=True)["ema_state_dict"], "module.encoder."
    )
    _assert_same(weights.state, expected)
    assert f"step {max(steps)}" in weights.note and "EMA" in weights.note
    older = load_encoder_weights(oldest)
    assert _differs(weights.state, older.state), "the run's checkpoints should differ (training moved)"
    assert (
        weights.config
        == MAEConfig.from_dict(
            torch.load(newest, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]["model"]
        ).encoder
    )
    assert set(weights.state) == _encoder_keys(weights.config)


def test_a_checkpoint_gives_ema_weights_by_default_and_the_live_ones_on_request(tiny_pretrain_run):
    path = _checkpoints(tiny_pretrain_run)[max(_checkpoints(tiny_pretrain_run))]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    ema = load_encoder_weights(path)
    live = load_encoder_weights(path, pick="model")
    _assert_same(ema.state, _sub(checkpoint["ema_state_dict"], "module.encoder."))
    _assert_same(live.state, _sub(checkpoint["state_dict"], "model.encoder."))
    assert _differs(ema.state, live.state), "EMA (decay 0.9) and live weights should differ after 6 steps"
    assert "EMA" in ema.note and "non-EMA" in live.note
    assert ema.config == live.config
    encoder = MaestroEncoder(ema.config)
    encoder.load_state_dict(ema.state, strict=True)


def test_a_checkpoint_without_ema_falls_back_to_the_live_weights(tiny_pretrain_run, tmp_path):
    path = _checkpoints(tiny_pretrain_run)[max(_checkpoints(tiny_pretrain_run))]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    del checkpoint["ema_state_dict"]
    torch.save(checkpoint, tmp_path / "no_ema.ckpt")
    weights = load_encoder_weights(tmp_path / "no_ema.ckpt")
    _assert_same(weights.state, _sub(checkpoint["state_dict"], "model.encoder."))
    assert "non-EMA" in weights.note


def test_a_finetune_run_gives_the_encoder_of_its_best_checkpoint(finetuned_run):
    best = torch.load(finetuned_run.out / "best.ckpt", map_location="cpu", weights_only=True)
    weights = load_encoder_weights(finetuned_run.out)
    _assert_same(weights.state, _sub(best["ema_state_dict"], "module.encoder."))
    assert set(weights.state) == _encoder_keys(weights.config)
    assert weights.config.modalities == ("aerial", "dem", "s2", "s1_asc", "s1_des")
    assert weights.note == f"EMA weights of run/best.ckpt (step {best['global_step']})"


def test_a_run_gives_the_network_it_trained_with_its_task_and_where_it_came_from(finetuned_run):
    segmenter = load_weights(finetuned_run.out)
    assert segmenter.model_type is MAESTRO_SEGMENTER and segmenter.run == finetuned_run.out
    assert segmenter.checkpoint == finetuned_run.out / "best.ckpt"
    assert (
        segmenter.task["name"] == "lc" and len(segmenter.task["class_names"]) == segmenter.config.num_classes
    )
    assert segmenter.run_config["task"] == {
        "name": "lc",
        "level": 1,
        "nomenclature": None,
        "label_size": None,
    }
    best = torch.load(finetuned_run.out / "best.ckpt", map_location="cpu", weights_only=True)
    _assert_same(segmenter.state, _sub(best["ema_state_dict"], EMA_PREFIX))
    _assert_same(
        load_weights(finetuned_run.out, pick="model").state, _sub(best["state_dict"], NETWORK_PREFIX)
    )
    with pytest.raises(ConfigError, match="holds a maestro-segmenter, not a maestro-mae"):
        load_weights(finetuned_run.out, MAESTRO_MAE)


def test_the_checkpoint_layout_is_what_training_writes(tiny_pretrain_run):
    """The key prefixes the readers use are those of a real run's checkpoints."""
    path = _checkpoints(tiny_pretrain_run)[max(_checkpoints(tiny_pretrain_run))]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert all(key.startswith(NETWORK_PREFIX) for key in checkpoint["state_dict"])
    assert all(key.startswith(EMA_PREFIX) for key in checkpoint["ema_state_dict"])
    mae = from_checkpoint(path, tiny_pretrain_run)
    assert mae.model_type is MAESTRO_MAE and mae.task is None
    assert mae.note == f"EMA weights of run/checkpoints/{path.name} (step {checkpoint['global_step']})"


def test_model_folders_of_every_model_type_give_the_encoder(tiny_pretrain_run, tmp_path):
    source = load_encoder_weights(tiny_pretrain_run)
    encoder_folder = write_model_folder(
        tmp_path / "encoder", "maestro-encoder", source.config.to_dict(), source.state
    )
    weights = load_encoder_weights(encoder_folder)
    _assert_same(weights.state, source.state)
    assert weights.config == source.config and "maestro-encoder" in weights.note
    assert load_weights(encoder_folder).model_type is MAESTRO_ENCODER

    checkpoint = torch.load(
        _checkpoints(tiny_pretrain_run)[max(_checkpoints(tiny_pretrain_run))],
        map_location="cpu",
        weights_only=True,
    )
    mae_config = checkpoint["hyper_parameters"]["config"]["model"]
    mae_state = _sub(checkpoint["ema_state_dict"], "module.")
    assert any(not key.startswith("encoder.") for key in mae_state)  # decoder weights are dropped
    weights = load_encoder_weights(write_model_folder(tmp_path / "mae", "maestro-mae", mae_config, mae_state))
    _assert_same(weights.state, source.state)
    assert weights.config == source.config


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def payload(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "unpickled.marker"
    data = pickle.dumps({"encoder.weight": _Payload(marker)})
    pickle.loads(data).popitem()[1].close()  # the payload really runs code when unpickled ...
    assert marker.exists()
    marker.unlink()  # ... so the marker proves whether a loader unpickled it
    return data, marker


def test_a_folder_with_only_pickled_weights_is_refused_without_unpickling(payload, tmp_path):
    data, marker = payload
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(data)
    for load in (read_model_folder, from_folder, load_encoder_weights):
        with pytest.raises(ConfigError, match=r"only pickled weights \['pytorch_model.bin'\].*never loaded"):
            load(folder)
    (folder / "config.json").write_text('{"model_type": "maestro-encoder", "config": {}}')
    with pytest.raises(ConfigError, match="pytorch_model.bin"):
        load_encoder_weights(folder)
    assert not marker.exists()


def test_a_pickled_checkpoint_with_code_is_refused_without_running_it(payload, tmp_path):
    data, marker = payload
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_encoder_weights(path)
    assert not marker.exists()


def test_a_missing_source_names_the_path(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="nowhere: no such run directory, training checkpoint or model folder"
    ):
        load_encoder_weights(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        load_encoder_weights(tmp_path / "empty")
