"""``maestro publish --dry-run``: training checkpoints become model folders with their card, offline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from fixtures_flairhub import write_flairhub_tree
from huggingface_hub import ModelCard

from finetune.config import FinetuneConfig, ModelConfig, TaskConfig
from maestro.cli import main
from maestro.config import to_dict
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from maestro.models import MaestroEncoder, MaestroMAE, create_ema, from_pretrained
from maestro.models.finetuning import network_config
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.synthetic import tiny_config
from maestro.training.config import DataConfig
from pretrain.config import PretrainConfig
from shards.writer import BuildConfig, build

STEP = 42


def _lightning_checkpoint(config: dict, live: torch.nn.Module, averaged: torch.nn.Module | None) -> dict:
    """The keys the suite's Lightning checkpoints hold: the run config in hyper_parameters,
    ``model.*`` weights, the EMA copy (timm ModelEmaV3) under ``module.*``."""
    checkpoint = {
        "epoch": 1,
        "global_step": STEP,
        "pytorch-lightning_version": "2.6.0",
        "hyper_parameters": {"config": config},
        "state_dict": {f"model.{key}": value for key, value in live.state_dict().items()},
    }
    if averaged is not None:
        checkpoint["ema_state_dict"] = create_ema(averaged).state_dict()
    return checkpoint


def pretrain_checkpoint(run: Path, ema: bool = True) -> tuple[Path, MaestroMAE, MaestroMAE]:
    """``{run}/checkpoints/step0000042.ckpt`` of a tiny MAE; returns (path, live model, EMA model)."""
    config = tiny_config()
    torch.manual_seed(0)
    live = MaestroMAE(config)
    torch.manual_seed(1)
    averaged = MaestroMAE(config)
    raw = to_dict(PretrainConfig(data=DataConfig(train="shards"), model=config))
    path = run / "checkpoints" / f"step{STEP:07d}.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(_lightning_checkpoint(raw, live, averaged if ema else None), path)
    (run / "config.yaml").write_text("model: {}\n")
    return path, live, averaged


def finetune_run(
    run: Path, init: str = "hf:org/base@v1.0", test: str | None = None
) -> tuple[Path, MaestroSegmenter]:
    """``{run}/best.ckpt`` of a tiny lc segmenter and ``{run}/test/metrics.json``; returns (path, EMA
    model). ``test``: the test shards its config records (default: the example's, absent here)."""
    config = FinetuneConfig(
        task=TaskConfig("lc", 1),
        model=ModelConfig(init=init, encoder=tiny_config().encoder, decoder_channels=16),
    )
    if test is not None:
        config = dataclasses.replace(config, data=DataConfig(train=test, val=test, test=test))
    torch.manual_seed(2)
    live = MaestroSegmenter(network_config(config.model, config.task))
    torch.manual_seed(3)
    averaged = MaestroSegmenter(network_config(config.model, config.task))
    run.mkdir(parents=True)
    torch.save(_lightning_checkpoint(to_dict(config), live, averaged), run / "best.ckpt")
    (run / "config.yaml").write_text("task: {name: lc}\n")
    per_class = [
        {"index": i, "name": name, "evaluated": i < 15, "iou": (0.5 + i / 100 if i < 15 else None)}
        for i, name in enumerate(
            ["building", "greenhouse", "swimming pool"] + [f"class {i}" for i in range(3, 19)]
        )
    ]
    (run / "test").mkdir()
    (run / "test" / "metrics.json").write_text(
        json.dumps({"miou": 0.6123, "oa": 0.781, "per_class": per_class})
    )
    return run / "best.ckpt", averaged


def _same(model: torch.nn.Module, reference: torch.nn.Module) -> bool:
    ours, theirs = model.state_dict(), reference.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_dry_run_publishes_the_ema_encoder_of_a_pretrain_run(tmp_path, capsys):
    _, live, averaged = pretrain_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    assert main(["publish", str(tmp_path / "run"), "--repo", "org/name", "--dry-run", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    encoder = MaestroEncoder.from_pretrained(out)
    assert _same(encoder, averaged.encoder) and not _same(encoder, live.encoder)

    printed = capsys.readouterr().out
    card = ModelCard(printed)
    assert card.data.pipeline_tag == "feature-extraction" and card.data.library_name == "maestro-eo"
    assert f"EMA weights of run/checkpoints/step{STEP:07d}.ckpt (step {STEP})" in printed
    assert (
        'MaestroEncoder.from_pretrained("org/name")' in printed
        and "finetune --task lc --init hf:org/name" in printed
    )
    assert (out / CARD_NAME).read_text() == printed


def test_the_full_mae_and_the_trained_weights_on_request(tmp_path):
    ckpt, live, _ = pretrain_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    assert (
        main(
            [
                "publish",
                str(ckpt),
                "--repo",
                "org/name",
                "--what",
                "mae",
                "--weights",
                "model",
                "--dry-run",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    mae = from_pretrained(out)
    assert isinstance(mae, MaestroMAE) and _same(mae, live)
    assert "trained (non-EMA) weights" in (out / CARD_NAME).read_text()


def test_a_checkpoint_without_ema_publishes_the_trained_weights(tmp_path):
    ckpt, live, _ = pretrain_checkpoint(tmp_path / "run", ema=False)
    assert (
        main(["publish", str(ckpt), "--repo", "org/name", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    )
    assert _same(MaestroEncoder.from_pretrained(tmp_path / "out"), live.encoder)


@pytest.fixture(scope="module")
def flairhub_test_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test-split shards of a tree in FLAIR-HUB's layout with its own split CSVs (not the toy's)."""
    work = tmp_path_factory.mktemp("flairhub")
    ids = [f"D006-2022_RA-S1-00_{i}-0" for i in range(3)]
    tree = write_flairhub_tree(work / "tree", ("s2", "s2_mask", "lc"), {"test": ids})
    build(BuildConfig(tree.root, work / "shards", split="test", modalities=("s2", "lc"), progress=False))
    return work / "shards"


@pytest.fixture(scope="module")
def toy_test_shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy_test") / "shards"
    build(BuildConfig(toy_root, out, split="test", modalities=("aerial", "lc"), progress=False))
    return out


def test_a_finetune_run_publishes_its_segmenter_with_task_scores_and_base_model(
    tmp_path, capsys, flairhub_test_shards
):
    _, averaged = finetune_run(tmp_path / "lc-level1", test=str(flairhub_test_shards))
    out = tmp_path / "out"
    assert (
        main(["publish", str(tmp_path / "lc-level1"), "--repo", "org/seg", "--dry-run", "--out", str(out)])
        == 0
    )
    segmenter = MaestroSegmenter.from_pretrained(out)
    assert _same(segmenter, averaged)
    document = json.loads((out / CONFIG_NAME).read_text())
    assert document["task"]["name"] == "lc" and document["task"]["class_names"][:2] == [
        "building",
        "greenhouse",
    ]

    card = ModelCard(capsys.readouterr().out)
    assert card.data.base_model == "org/base"
    assert card.data.pipeline_tag == "image-segmentation" and "segmentation" in card.data.tags
    results = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert results["mIoU (%)"] == 61.23 and results["OA (%)"] == 78.1 and results["IoU building (%)"] == 50.0
    assert {(r.dataset_type, r.dataset_split) for r in card.data.eval_results} == {("IGNF/FLAIR-HUB", "test")}
    assert "| building | 50.00 |" in card.text
    assert "## Results on the FLAIR-HUB lc level 1 test split" in card.text and "3 patches" in card.text


def test_scores_on_toy_shards_are_not_claimed_as_flairhub_results(tmp_path, capsys, toy_test_shards):
    finetune_run(tmp_path / "run", test=str(toy_test_shards))
    assert main(["publish", str(tmp_path / "run"), "--repo", "org/seg", "--dry-run"]) == 0
    card = ModelCard(capsys.readouterr().out)
    assert card.data.eval_results is None and "model-index" not in card.data.to_dict()
    results = card.text.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert results.startswith(" on synthetic toy data") and "FLAIR-HUB lc level 1" not in card.text
    assert "4 patches" in results and "`test` split" in results and "| building | 50.00 |" in results


def test_scores_on_unknown_test_data_are_not_claimed_as_flairhub_results(tmp_path, capsys):
    finetune_run(tmp_path / "run", test=str(tmp_path / "elsewhere"))  # no manifest there
    assert main(["publish", str(tmp_path / "run"), "--repo", "org/seg", "--dry-run"]) == 0
    card = ModelCard(capsys.readouterr().out)
    assert card.data.eval_results is None and "FLAIR-HUB lc level 1" not in card.text
    results = card.text.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert results.startswith(" on unrecorded test data") and str(tmp_path / "elsewhere") in results


def test_a_finetune_init_that_is_not_on_the_hub_has_no_base_model(tmp_path, capsys):
    finetune_run(tmp_path / "run", init="runs/pretrain")
    assert (
        main(["publish", str(tmp_path / "run"), "--repo", "org/seg", "--dry-run", "--what", "encoder"]) == 0
    )
    card = ModelCard(capsys.readouterr().out)
    assert card.data.base_model is None and card.data.pipeline_tag == "feature-extraction"


def test_user_errors_exit_2_with_what_to_do(tmp_path, caplog):
    ckpt, _, _ = pretrain_checkpoint(tmp_path / "run")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["publish", str(ckpt), "--repo", "org/name", "--dry-run", "--out", str(busy)]) == 2
    assert "holds other files ['notes.txt']" in caplog.text and (busy / "notes.txt").read_text() == "mine"

    assert main(["publish", str(ckpt), "--repo", "org/name", "--what", "segmenter", "--dry-run"]) == 2
    assert "publish the encoder or the mae" in caplog.text
    assert main(["publish", str(ckpt), "--repo", "org/name@v1", "--dry-run"]) == 2
    assert "--revision" in caplog.text
    assert main(["publish", str(tmp_path / "nowhere"), "--repo", "org/name", "--dry-run"]) == 2


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path, caplog):
    ckpt, _, _ = pretrain_checkpoint(tmp_path / "run")
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["ema_state_dict"] = {
        k: v for k, v in checkpoint["ema_state_dict"].items() if "patch_embed" not in k
    }
    torch.save(checkpoint, ckpt)
    assert (
        main(["publish", str(ckpt), "--repo", "org/name", "--dry-run", "--out", str(tmp_path / "out")]) == 2
    )
    assert "missing" in caplog.text and "patch_embed" in caplog.text
    assert not (tmp_path / "out").exists()


def test_a_pickled_checkpoint_is_not_unpickled(tmp_path, caplog):
    from test_hub_cache import Armed

    marker = tmp_path / "marker"
    torch.save({"hyper_parameters": {"config": {}}, "state_dict": Armed(marker)}, tmp_path / "evil.ckpt")
    assert main(["publish", str(tmp_path / "evil.ckpt"), "--repo", "org/name", "--dry-run"]) == 2
    assert "not a readable checkpoint" in caplog.text and not marker.exists()
