"""``maestro.api``: README's Python API section runs as written against a tiny pretraining run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_hub_cache import _encoder, hub_cache  # noqa: F401 - the offline cache fixture

from maestro.api import load_encoder
from maestro.config import load_config
from pretrain.cli import run
from pretrain.config import PretrainConfig
from shards.loader import make_loader

ROOT = Path(__file__).parent.parent


def readme_python_api() -> str:
    """The first ``python`` block of README.md's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def example(toy_root, toy_shards, tmp_path_factory) -> Path:
    """A folder laid out like `make example`'s: example/{flairhub,shards,runs/pretrain}, the run a
    two-step pretraining of the toy config (4 S2 dates) made narrower."""
    cwd = tmp_path_factory.mktemp("api")
    (cwd / "example").mkdir()
    (cwd / "example" / "flairhub").symlink_to(toy_root)
    (cwd / "example" / "shards").symlink_to(toy_shards)
    config = load_config(
        PretrainConfig,
        ROOT / "configs" / "pretrain" / "toy.yaml",
        [
            f"data.train={toy_shards}",
            "data.val=null",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.batches_per_epoch=2",
            "data.shuffle_buffer=2",
            "model.encoder.width=64",
            "model.encoder.depth=2",
            f"trainer.output_dir={cwd / 'example' / 'runs' / 'pretrain'}",
            "trainer.max_epochs=1",
            "trainer.reconstruction_every_n_steps=0",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
        ],
    )
    run(config)
    return cwd


def test_the_readme_snippet_runs_as_written(example, monkeypatch, capsys):
    monkeypatch.chdir(example)
    exec(compile(readme_python_api(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert (
        "EMA weights of pretrain/checkpoints/step0000002.ckpt (step 2)" in printed
        and "'aerial': (4, 1, 1, 8, 8, 64)" in printed
    )


def test_the_encoder_and_its_preprocessing_come_from_the_run(example):
    run_dir = example / "example" / "runs" / "pretrain"
    model = load_encoder(run_dir)
    assert not model.encoder.training and model.note.startswith("EMA weights")
    # The run's 4 S2 dates, not the registry's 16.
    assert model.preprocess.config.spec("s2").num_dates == model.encoder.config.specs["s2"].num_dates == 4
    assert model.members == ["aerial", "dem", "s2", "s1_asc", "s1_des", "s2_mask"]
    live = load_encoder(run_dir / "checkpoints" / "step0000002.ckpt", weights="model")
    assert live.note.startswith("trained (non-EMA) weights")
    batch = next(iter(model.loader(example / "example" / "shards", split="val", batch_size=2)))
    ema, trained = model.encode(batch).tokens["s2"], live.encode(batch).tokens["s2"]
    assert ema.shape == trained.shape and not torch.equal(ema, trained)


def test_a_small_shuffle_buffer_needs_no_other_setting(toy_shards):
    loader = make_loader(
        toy_shards,
        preprocess=None,
        split="train",
        batch_size=None,
        num_workers=0,
        batches_per_epoch=1,
        shuffle_buffer=4,
    )
    assert loader.shards.config.shuffle_initial == 4


@pytest.mark.usefixtures("hub_cache")
def test_a_bare_hub_id_loads_from_the_offline_cache(tmp_path, monkeypatch):
    """``load_encoder("org/name")`` with HF_HUB_OFFLINE=1: the repo's encoder from the cache, with
    its preprocessing; a local folder of that name would win (as in huggingface_hub)."""
    monkeypatch.chdir(tmp_path)
    for spec, seed in (("org/name", 0), ("org/name@v1.0", 1), ("hf:org/name", 0)):
        model = load_encoder(spec)
        expected = _encoder(seed).state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in model.encoder.state_dict().items()), (
            spec
        )
        assert model.note.startswith("maestro-encoder weights of ") and model.preprocess is not None
    _encoder(1).save_pretrained(tmp_path / "org" / "name")
    local, expected = load_encoder("org/name"), _encoder(1).state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in local.encoder.state_dict().items())
    assert local.note == "maestro-encoder weights of org/name"


def test_the_reader_opens_any_dataset_of_the_registry(tmp_path):
    """``model.reader`` reads FLAIR #2 or your own dataset (its data config) with the encoder's
    inputs; one it does not hold is named, and FLAIR-HUB reader options are FLAIR-HUB's only."""
    from maestro.data.custom.toy import write_custom_toy
    from maestro.data.flair2.toy import write_toy_release
    from maestro.errors import ConfigError
    from maestro.models.config import EncoderConfig
    from maestro.models.encoder import MaestroEncoder

    write_custom_toy(tmp_path / "bocage", num_patches=3, seed=0)
    write_toy_release(tmp_path / "flair2", num_patches=4, seed=0)
    small = {"patch_size": 128}
    config = EncoderConfig(
        modalities=("aerial", "dem"),
        overrides={"aerial": small, "dem": small},
        size="tiny",
        width=32,
        depth=2,
        inter_depth=1,
    )
    MaestroEncoder(config).save_pretrained(tmp_path / "encoder")
    model = load_encoder(tmp_path / "encoder")
    reader = model.reader(data_config=tmp_path / "bocage" / "data.yaml", split="train")
    features = model.encode(model.batch([reader[0]]))
    assert set(features.tokens) == {"aerial", "dem"}
    with pytest.raises(ConfigError, match=r"dataset 'flair2' has no \['dem'\]"):
        model.reader(tmp_path / "flair2", dataset="flair2")
    with pytest.raises(ConfigError, match=r"\['on_error'\] are FLAIR-HUB reader options"):
        model.reader(data_config=tmp_path / "bocage" / "data.yaml", on_error="skip")
