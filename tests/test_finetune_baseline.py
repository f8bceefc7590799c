"""``finetune --model swin-utae``: the baseline through the same command, data path, metrics and outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from baseline_fixtures import TINY_OPTIONS, build_shards

from finetune.cli import main
from maestro.config import to_dict

pytestmark = pytest.mark.usefixtures("single_thread")
COMMAND = ["--model", "swin-utae", "--task", "lpis", "--level", "1", "--modalities", "spot,s2,s1_asc,s1_des"]


@pytest.fixture(scope="module")
def shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shards(toy_root, tmp_path_factory.mktemp("spot_shards") / "shards")


def write_config(tmp_path: Path, shards: Path) -> Path:
    config = {
        "data": {
            "train": str(shards),
            "val": str(shards),
            "test": str(shards),
            "test_split": "val",
            "batch_size": 2,
            "num_workers": 0,
            "batches_per_epoch": 2,
        },
        "model": {"baseline": to_dict(TINY_OPTIONS), "aux_heads": True, "modality_dropout": 0.2},
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "ema_decay": 0.5,
            "log_every_n_steps": 1,
        },
        "eval": {"num_figures": 1},
    }
    path = tmp_path / "swin_utae.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_swin_utae_trains_tests_and_retests_with_the_finetune_command(shards, tmp_path) -> None:
    config, out = write_config(tmp_path, shards), tmp_path / "run"
    argv = [*COMMAND, "--no-pretrained", "--config", str(config), "--output-dir", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and (out / "best.ckpt").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert saved["architecture"] == "swin-utae" and saved["encoder"]["modalities"] == [
        "spot",
        "s2",
        "s1_asc",
        "s1_des",
    ]
    (out / "test" / "metrics.json").unlink()
    assert main([*argv, "--eval-only"]) == 0  # a trained run is tested again without ImageNet weights
    assert (out / "test" / "metrics.json").is_file()


def test_missing_imagenet_weights_stop_the_run_with_one_line(shards, tmp_path, monkeypatch, caplog) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = write_config(tmp_path, shards)
    with caplog.at_level(logging.ERROR):
        assert main([*COMMAND, "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    assert "--no-pretrained" in caplog.text and "swin_tiny_patch4_window7_224" in caplog.text
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------ published and mapped
@pytest.fixture(scope="module")
def swin_utae_run(shards, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained Swin-UTAE run (random Swins, one epoch) of the tiny baseline on the toy shards."""
    tmp = tmp_path_factory.mktemp("swin_utae")
    out = tmp / "run"
    argv = [*COMMAND, "--no-pretrained", "--config", str(write_config(tmp, shards)), "--output-dir", str(out)]
    assert main(argv) == 0
    return out


def test_a_swin_utae_run_is_published_and_maps_a_zone_like_its_run(swin_utae_run, tmp_path) -> None:
    import numpy as np
    import rasterio
    from huggingface_hub import ModelCard

    from maestro.cli import main as maestro
    from maestro.models import from_pretrained
    from maestro.models.baseline.model import SwinUTAE
    from predict.cli import main as predict
    from predict.model import load_model
    from shards.cli import main as shards

    folder = tmp_path / "published"
    assert (
        maestro(["publish", str(swin_utae_run), "--repo", "org/swin-utae", "--dry-run", "--out", str(folder)])
        == 0
    )
    document = json.loads((folder / "config.json").read_text())
    assert document["model_type"] == "swin-utae-segmenter" and document["task"]["name"] == "lpis"
    assert document["config"]["cloudy_date_fraction"] == TINY_OPTIONS.cloudy_date_fraction
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and "masked-autoencoder" not in card.data.tags
    assert (
        "Swin-UTAE" in card.text
        and "predict --model hf:org/swin-utae" in card.text
        and "## Results" in card.text
    )
    assert isinstance(from_pretrained(folder), SwinUTAE)

    published, run = load_model(str(folder)), load_model(str(swin_utae_run))
    assert published.preprocess() == run.preprocess()
    assert published.preprocess().cloudy_date_fraction == TINY_OPTIONS.cloudy_date_fraction
    zone = tmp_path / "zone"
    assert shards(["toy", "--zone", str(zone), "--size-m", "120", "--seed", "2"]) == 0
    maps = {}
    for name, source in (("folder", folder), ("run", swin_utae_run)):
        out = tmp_path / f"{name}.tif"
        args = [
            "--model",
            str(source),
            "--zone",
            str(zone),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
        assert predict(args) == 0
        with rasterio.open(out) as src:
            maps[name] = src.read(1)
            assert src.tags()["task"] == "lpis"
    classes = set(np.unique(maps["folder"]).tolist()) - {255}
    assert classes and max(classes) < run.num_classes and not classes & set(run.task.ignored)
    np.testing.assert_array_equal(maps["folder"], maps["run"])  # the same EMA weights, fed the same way
