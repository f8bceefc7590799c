"""Where a pretrained encoder comes from: run directories, checkpoints (EMA or live), model folders,
restriction to a subset of inputs, and pickles that are refused without ever being unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder, write_model_folder
from maestro.hub.sources import from_checkpoint, from_folder, load_encoder_weights, restrict
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.encoder import MaestroEncoder


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
    older = from_checkpoint(oldest)
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
    live = load_encoder_weights(path, weights="model")
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


def test_a_finetune_run_gives_the_encoder_of_its_segmenter(finetuned_run):
    checkpoints = _checkpoints(finetuned_run.out)
    newest = checkpoints[max(checkpoints)]
    weights = load_encoder_weights(finetuned_run.out)
    expected = _sub(
        torch.load(newest, map_location="cpu", weights_only=True)["ema_state_dict"], "module.encoder."
    )
    _assert_same(weights.state, expected)
    assert set(weights.state) == _encoder_keys(weights.config)
    assert weights.config.modalities == ("aerial", "dem", "s2", "s1_asc", "s1_des")


def test_model_folders_of_every_model_type_give_the_encoder(tiny_pretrain_run, tmp_path):
    source = load_encoder_weights(tiny_pretrain_run)
    encoder_folder = write_model_folder(
        tmp_path / "encoder", "maestro-encoder", source.config.to_dict(), source.state
    )
    weights = load_encoder_weights(encoder_folder)
    _assert_same(weights.state, source.state)
    assert weights.config == source.config and "maestro-encoder" in weights.note

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


def test_restrict_keeps_only_the_weights_of_the_chosen_inputs(tiny_pretrain_run):
    weights = load_encoder_weights(tiny_pretrain_run)
    subset = restrict(weights, ("aerial", "s2"))
    assert subset.config.modalities == ("aerial", "s2")
    assert set(subset.config.overrides) == {"aerial", "s2"}
    assert set(subset.state) == _encoder_keys(subset.config)
    assert len(subset.state) < len(weights.state)
    dropped = set(weights.state) - set(subset.state)
    assert dropped and all(any(key in name for key in ("dem", "s1")) for name in dropped), sorted(dropped)[:5]
    for key, value in subset.state.items():
        assert torch.equal(value, weights.state[key]), key
    encoder = MaestroEncoder(subset.config)
    encoder.load_state_dict(subset.state, strict=True)
    assert restrict(weights, weights.config.modalities) is weights
    assert "restricted to ['aerial', 's2']" in subset.note


def test_restrict_refuses_an_input_the_encoder_never_saw(tiny_pretrain_run):
    weights = load_encoder_weights(tiny_pretrain_run)
    with pytest.raises(ConfigError, match=r"no weights\s+for \['spot'\]"):
        restrict(weights, ("aerial", "spot"))


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
    with pytest.raises(FileNotFoundError, match="no pretrained weights at .*nowhere"):
        load_encoder_weights(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        load_encoder_weights(tmp_path / "empty")
