"""``finetune --model unet|utt``: FLAIR #2's baselines trained, tested, published and mapped (or
refused) through the suite's commands, on the FLAIR #2 toy shards.

The toy's classes are learnable from both inputs (maestro/data/flair2/toy.py: a colour, NIR and
elevation per class; the majority class's spectrum in each patch's Sentinel-2 footprint). A tiny
smp U-Net (timm's RegNetX-200MF encoder, 3 narrow decoder blocks) and U-TAE train for 32 steps,
the learning rate annealed to 0 so that BatchNorm's running statistics catch up with the weights,
which takes both networks clearly above chance on the test split's two patches (10 classes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from finetune.cli import main as finetune
from maestro.cli import main as maestro
from maestro.models import from_pretrained
from maestro.models.flair2.segmenter import UNetSegmenter, UTTSegmenter
from maestro.models.zoo import load_weights
from predict.cli import main as predict
from shards.cli import main as shards

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_UTAE = {
    "encoder_widths": [16, 16, 32],
    "decoder_widths": [16, 16, 32],
    "num_heads": 4,
    "d_model": 16,
    "d_k": 2,
    "kernel_size": 4,
    "stride": 2,
}
MIOU_ABOVE = 0.2
OA_ABOVE = 0.3
"""Clearly above chance: a constant map scores OA 19 % and mIoU under 2 %, a uniformly random one
8 % and 5 %; the runs reach about 0.4 / 0.5."""


@pytest.fixture(scope="module")
def flair2_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy FLAIR #2 release (8 patches) as train / val / test shards (4 / 2 / 2 samples)."""
    work = tmp_path_factory.mktemp("flair2")
    assert shards(["toy", "--dataset", "flair2", "--out", str(work / "release"), "--patches", "8"]) == 0
    build = [
        "build",
        "--dataset",
        "flair2",
        "--root",
        str(work / "release"),
        "--split",
        "train",
        "val",
        "test",
    ]
    assert shards([*build, "--out", str(work / "shards"), "--max-count", "4", "--no-progress"]) == 0
    return work / "shards"


def write_config(folder: Path, shards_dir: Path) -> Path:
    config = {
        "data": {
            "train": str(shards_dir),
            "val": str(shards_dir),
            "test": str(shards_dir),
            "batch_size": 2,
            "num_workers": 0,
            "shuffle_buffer": 4,
        },
        "model": {"flair2": {"encoder": "tu-regnetx_002", "decoder_channels": [16, 8, 8], "utae": TINY_UTAE}},
        "optim": {"base_lr": 0.03, "warmup_fraction": 0.1, "end_fraction": 0.0},
        "trainer": {
            "max_epochs": 16,
            "val_every_n_epochs": 4,
            "ema_decay": 0.0,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 1,
        },
        "eval": {"num_figures": 0},
    }
    path = folder / "flair2_baseline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(architecture: str, shards_dir: Path, folder: Path) -> Path:
    out = folder / "run"
    argv = ["--model", architecture, "--task", "flair2", "--no-pretrained"]
    assert finetune([*argv, "--config", str(write_config(folder, shards_dir)), "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def unet_run(flair2_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("unet", flair2_shards, tmp_path_factory.mktemp("unet"))


@pytest.fixture(scope="module")
def utt_run(flair2_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("utt", flair2_shards, tmp_path_factory.mktemp("utt"))


@pytest.mark.parametrize(
    ("architecture", "modalities"),
    [("unet", ["aerial", "elevation"]), ("utt", ["aerial", "elevation", "s2"])],
)
def test_both_baselines_train_and_beat_chance_on_the_test_split(architecture, modalities, request) -> None:
    run = request.getfixturevalue(f"{architecture}_run")
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["miou"] > MIOU_ABOVE and metrics["oa"] > OA_ABOVE, metrics
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert model["architecture"] == architecture and model["encoder"]["modalities"] == modalities
    assert model["encoder"]["overrides"]["aerial"]["bands"] == ["R", "G", "B", "NIR"]  # the paper's order


@pytest.mark.parametrize(
    ("architecture", "network", "words"),
    [("unet", UNetSegmenter, "predict --model hf:org/unet"), ("utt", UTTSegmenter, "does not map zones")],
)
def test_a_run_is_published_and_loads_back_with_its_weights(architecture, network, words, request, tmp_path):
    run = request.getfixturevalue(f"{architecture}_run")
    folder = tmp_path / "published"
    argv = ["publish", str(run), "--repo", f"org/{architecture}", "--dry-run", "--out", str(folder)]
    assert maestro(argv) == 0
    document = json.loads((folder / "config.json").read_text())
    assert document["model_type"] == f"{architecture}-segmenter" and document["task"]["name"] == "flair2"
    card = (folder / "README.md").read_text()
    assert words in card and "arXiv 2305.14467" in card and "MAESTRO encoder" not in card
    published = from_pretrained(folder)
    assert isinstance(published, network) and network.from_pretrained(folder).config == published.config
    trained = load_weights(str(run)).state  # the run's best.ckpt, read as every source is
    assert published.state_dict().keys() == trained.keys()
    for name, tensor in published.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), trained[name].numpy())


def write_elevation(zone: Path) -> None:
    """FLAIR #2's elevation band for a toy FLAIR-HUB zone: its DSM as uint8 metres above the lowest."""
    with rasterio.open(zone / "dem.tif") as src:
        profile, surface = src.profile, src.read(1)
    profile.update(count=1, dtype="uint8")
    with rasterio.open(zone / "elevation.tif", "w", **profile) as dst:
        dst.write(np.clip(surface - surface.min(), 0, 255).astype("uint8"), 1)


def test_the_unet_maps_a_zone_and_utt_is_refused_saying_why(unet_run, utt_run, tmp_path, caplog) -> None:
    zone = tmp_path / "zone"
    assert shards(["toy", "--zone", str(zone), "--size-m", "120", "--seed", "2"]) == 0
    write_elevation(zone)
    args = ["--zone", str(zone), "--device", "cpu", "--no-progress"]
    assert predict(["--model", str(unet_run), "--out", str(tmp_path / "unet.tif"), *args]) == 0
    with rasterio.open(tmp_path / "unet.tif") as src:
        classes = set(np.unique(src.read(1)).tolist()) - {255}
        assert src.tags()["task"] == "flair2"
    assert classes and max(classes) < 12  # FLAIR #2's 12 scored classes; 'other' has no channel
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert predict(["--model", str(utt_run), "--out", str(tmp_path / "utt.tif"), *args]) == 2
    assert "utt-segmenter cannot map a zone" in caplog.text and "super-patch" in caplog.text
    assert not (tmp_path / "utt.tif").exists()


@pytest.mark.parametrize(
    ("architecture", "modalities"), [("unet", "s2"), ("unet", "elevation,s2"), ("utt", "aerial,elevation")]
)
def test_inputs_a_baseline_cannot_read_exit_2_naming_the_flag(architecture, modalities, tmp_path, caplog):
    argv = ["--model", architecture, "--task", "flair2", "--modalities", modalities, "--no-pretrained"]
    with caplog.at_level(logging.ERROR):
        assert finetune([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    assert "--modalities" in caplog.text
    assert not (tmp_path / "run").exists()


def test_missing_imagenet_weights_stop_a_fresh_run_with_one_line(
    flair2_shards, tmp_path, monkeypatch, caplog
):
    """A fresh run starts the smp encoder from ImageNet (smp fetches it from the Hugging Face Hub):
    offline and without a cached copy, the run stops before anything is written, saying what to do."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = write_config(tmp_path, flair2_shards)
    argv = ["--model", "unet", "--task", "flair2", "--config", str(config), "model.flair2.encoder=resnet18"]
    with caplog.at_level(logging.ERROR):
        assert finetune([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    assert "--no-pretrained" in caplog.text and "'resnet18'" in caplog.text
    assert not (tmp_path / "run").exists()
