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
