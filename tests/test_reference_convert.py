"""`finetune --init hf:...` on a Hub repo of reference weights: converted once, then cached."""

from __future__ import annotations

import pytest
import torch
from reference_fixture import CHECKPOINT, COMMIT, REPO, fake_hub, require_fixture

import maestro.reference.convert as convert
from maestro.errors import ConfigError
from maestro.models.zoo import load_encoder_weights
from maestro.reference import sources
from maestro.reference.options import ConversionOptions
from maestro.reference.unpickle import read_reference_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


def test_finetune_init_converts_a_reference_hub_repo_once(tmp_path, monkeypatch):
    require_fixture()
    calls: list[str] = []
    fake_hub(monkeypatch, calls)
    monkeypatch.setenv("MAESTRO_CACHE", str(tmp_path / "cache"))

    def no_safetensors(spec, *args, **kwargs):
        raise ConfigError(f"Hub repo {spec} has no model.safetensors")

    monkeypatch.setattr("maestro.hub.remote.download", no_safetensors)
    first = load_encoder_weights(f"hf:{REPO}")
    assert first.config.date_offset == "float32" and first.config.day_of_year_origin == 1
    cached = tmp_path / "cache" / "reference" / f"IGNF--MAESTRO_FLAIR-HUB_base@{COMMIT}" / "ema"
    assert (cached / "model.safetensors").is_file()

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(convert, "read_reference_checkpoint", must_not_convert)
    second = load_encoder_weights(f"hf:{REPO}")
    assert second.state.keys() == first.state.keys()
    assert all(torch.equal(second.state[k], first.state[k]) for k in first.state)
    direct = convert.convert_checkpoint(
        read_reference_checkpoint(CHECKPOINT), ConversionOptions(model_type="maestro-encoder")
    )
    assert all(torch.equal(direct.state[k], first.state[k]) for k in direct.state)


def test_a_hub_repo_without_a_reference_checkpoint_keeps_the_original_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MAESTRO_CACHE", str(tmp_path / "cache"))

    def no_safetensors(spec, *args, **kwargs):
        raise ConfigError("original: no model.safetensors")

    def no_checkpoint(repo_id, revision):
        raise ConfigError("Hub repo holds no .ckpt checkpoint")

    monkeypatch.setattr("maestro.hub.remote.download", no_safetensors)
    monkeypatch.setattr(sources, "resolve_hub_checkpoint", no_checkpoint)
    with pytest.raises(ConfigError, match="original: no model.safetensors"):
        load_encoder_weights("hf:org/plain")
