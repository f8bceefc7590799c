"""The ``finetune`` stage end to end on toy shards: every task level learns, a probe never touches
its encoder, inputs can be left out at test time, bad inputs stop the run before it trains, an
interrupted run resumes exactly, and the command works as typed."""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from finetune import cli, stage
from finetune.cli import run
from finetune.config import FinetuneTrainerConfig
from finetune.module import FinetuneTask
from finetune.stage import resolve
from maestro.models.zoo import load_encoder_weights

pytestmark = pytest.mark.usefixtures("single_thread")

OVERFIT = [
    "data.train_split=val",
    "data.val=null",
    "data.test_split=val",
    "data.batches_per_epoch=20",
    "trainer.max_epochs=1",
    "trainer.ema_decay=0",
    "eval.num_figures=0",
]
"""20 steps of 2 patches on the 4 patches of the toy val split, tested on the same 4 patches: a
learning check (a model that does not learn stays at the level of a trivial predictor), not a
generalisation benchmark. No validation and no EMA, so the test scores the trained weights."""


def _errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def _chance_miou(histogram: np.ndarray, evaluated: list[int]) -> float:
    """The best mIoU of a trivial predictor on a split with this label histogram: one constant
    class (IoU = its pixel share, 0 elsewhere), or uniform random guesses over the head's classes
    (expected IoU_k = (n_k/K) / (n_k + N/K - n_k/K))."""
    used = [c for c in evaluated if histogram[c] > 0]
    total, classes = histogram.sum(), len(histogram)
    constant = max(histogram[c] / total for c in used) / len(used)
    uniform = np.mean(
        [(histogram[c] / classes) / (histogram[c] + total / classes - histogram[c] / classes) for c in used]
    )
    return float(max(constant, uniform))


# ------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize(("task", "level"), [("lc", 1), ("lpis", 1), ("lpis", 2), ("lpis", 3)])
def test_every_task_level_trains_and_tests_far_above_chance(
    finetune_config, label_histogram, tmp_path, task, level
):
    out = tmp_path / "run"
    scores = run(finetune_config(out, f"task.name={task}", f"task.level={level}", *OVERFIT))
    histogram = label_histogram("val", task, level)
    np.testing.assert_array_equal(scores.support, histogram)  # every pixel scored exactly once
    chance = _chance_miou(histogram, list(scores.evaluated))
    assert scores.miou > 2.0 * chance, f"mIoU {scores.miou:.3f} vs trivial predictors {chance:.3f}"
    assert scores.overall_accuracy > 1.0 / len(histogram)
    assert (out / "test" / "metrics.json").is_file()


# --------------------------------------------------------------------------------------- probe
def test_a_probe_leaves_the_encoder_bit_identical_also_in_the_weights_it_tests(
    finetune_config, tiny_pretrain_run, tmp_path, monkeypatch
):
    """Every encoder tensor (parameters and buffers) of every checkpoint, live and EMA, and of the
    EMA model the test evaluates, is bit-identical to the pretrained EMA weights of ``--init``;
    the head did train."""
    initial = load_encoder_weights(tiny_pretrain_run).state  # EMA weights of the newest checkpoint
    tested = {}
    original_test_step = FinetuneTask.test_step

    def spy(self, batch, batch_idx):
        if not tested:
            tested.update({k: v.detach().clone() for k, v in self.eval_model.encoder.state_dict().items()})
            tested["__ema__"] = torch.tensor(self.ema is not None)
        return original_test_step(self, batch, batch_idx)

    monkeypatch.setattr(FinetuneTask, "test_step", spy)
    out = tmp_path / "probe"
    config = finetune_config(
        out,
        f"model.init={tiny_pretrain_run}",
        "model.encoder=null",
        "model.probe=true",
        "trainer.max_epochs=1",
        "eval.num_figures=0",
    )
    run(config)

    def same(state: dict, prefix: str, where: str) -> None:
        encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        assert encoder.keys() == initial.keys(), where
        for key, value in initial.items():
            assert torch.equal(encoder[key], value), f"{where}: {key}"

    checkpoints = [p for p in (out / "checkpoints").glob("*.ckpt") if not p.is_symlink()]
    checkpoints += list(out.glob("*.ckpt")) + list((out / "checkpoints").glob("best.ckpt"))
    assert len(checkpoints) >= 2
    for path in set(checkpoints):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        same(checkpoint["state_dict"], "model.encoder.", f"{path.name} weights")
        same(checkpoint["ema_state_dict"], "module.encoder.", f"{path.name} EMA")
    assert bool(tested.pop("__ema__")), "the test should evaluate the EMA weights"
    same(tested, "", "weights the test evaluated")

    # The head did train: its weights moved away from their initialisation.
    resolved, state = resolve(config)
    L.seed_everything(resolved.trainer.seed)
    start = FinetuneTask(resolved, encoder_state=state).model.state_dict()
    final = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(final[f"model.{k}"], v) for k, v in start.items() if k.startswith("decoder."))


# ------------------------------------------------------------------------ missing modalities
def test_a_model_trained_on_all_inputs_is_tested_without_s1(finetuned_run, tmp_path, monkeypatch, caplog):
    copy = tmp_path / "run"
    shutil.copytree(finetuned_run.out, copy, symlinks=True)
    shutil.rmtree(copy / "test")
    seen = set()
    original_test_step = FinetuneTask.test_step

    def spy(self, batch, batch_idx):
        seen.update(batch["inputs"])
        return original_test_step(self, batch, batch_idx)

    monkeypatch.setattr(FinetuneTask, "test_step", spy)
    caplog.set_level(logging.INFO)
    assert (
        cli.main(
            [
                "--config",
                str(copy / "config.yaml"),
                "--eval-only",
                "--output-dir",
                str(copy),
                "eval.missing_modalities=[s1_asc, s1_des]",
                "eval.save_predictions=false",
            ]
        )
        == 0
    ), _errors(caplog)
    assert seen == {"aerial", "dem", "s2"}  # s1 was not even read
    assert (copy / "test" / "metrics.json").is_file()
    assert any("testing without ['s1_asc', 's1_des']" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- bad input data
@pytest.fixture
def config_file(finetune_raw, tmp_path):
    def write(*, init: str | None = None, shards: Path | None = None, split: str | None = None) -> Path:
        raw = finetune_raw(tmp_path / "run")
        if init is not None:
            raw["model"]["init"] = init
            del raw["model"]["encoder"]
        if shards is not None:
            raw["data"].update(train=str(shards), val=str(shards), test=str(shards))
        if split is not None:
            raw["data"].update(train_split=split, val_split=split, test_split=split)
        path = tmp_path / "finetune.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


def test_an_init_without_a_requested_input_stops_before_training(
    config_file, tiny_pretrain_run, tmp_path, caplog
):
    path = config_file(init=str(tiny_pretrain_run))
    assert cli.main(["--config", str(path), "--modalities", "aerial,spot"]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "it has no weights for ['spot']" in errors[0], errors
    assert str(tiny_pretrain_run) in errors[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def shards_without_lpis_and_s1_des(toy_root, tmp_path_factory) -> Path:
    from shards.cli import main

    out = tmp_path_factory.mktemp("partial_shards") / "shards"
    assert (
        main(
            [
                "build",
                "--root",
                str(toy_root),
                "--split",
                "val",
                "--out",
                str(out),
                "--no-progress",
                "--modalities",
                "aerial",
                "dem",
                "s2",
                "s1_asc",
                "lc",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize(
    ("arguments", "absent"),
    [
        (["--task", "lpis", "--level", "2"], "['s1_des', 'lpis']"),
        (["--task", "lc"], "['s1_des']"),
    ],
)
def test_shards_without_the_task_label_or_an_input_stop_before_training(
    config_file, shards_without_lpis_and_s1_des, tmp_path, caplog, arguments, absent
):
    path = config_file(shards=shards_without_lpis_and_s1_des, split="val")
    assert cli.main(["--config", str(path), *arguments]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and f"has no {absent}: its shards hold" in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_an_encoder_built_for_other_image_sizes_stops_before_the_run_folder_exists(
    config_file, tmp_path, caplog
):
    """A converted reference encoder for 128 px aerial on 512 px shards: refused at start, naming
    the sizes and the flags that fix it, not a ValueError in the first step after writing logs."""
    from conftest import FINETUNE_ENCODER

    from maestro.models.config import EncoderConfig
    from maestro.models.encoder import MaestroEncoder

    raw = {**FINETUNE_ENCODER, "overrides": {**FINETUNE_ENCODER["overrides"]}}
    raw["overrides"]["aerial"] = {"patch_size": 32, "image_size": 128}
    folder = tmp_path / "encoder-128px"
    MaestroEncoder(EncoderConfig.from_dict(raw)).save_pretrained(folder)
    assert cli.main(["--config", str(config_file(init=str(folder)))]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert "aerial images of 128 px where the shards hold 512 px" in errors[0], errors
    assert "--image-size aerial=512" in errors[0] and "--modalities dem,s2,s1_asc,s1_des" in errors[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--modalities", "aerial,foo"], "model: modalities: unknown modality 'foo'"),
        (["--init", "NOTES"], "is not a readable checkpoint: it is not a torch.save zip archive"),
    ],
)
def test_an_unknown_modality_or_a_file_that_is_not_a_checkpoint_says_so(
    config_file, tiny_pretrain_run, tmp_path, caplog, arguments, message
):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not weights\n")
    path = config_file(init=str(tiny_pretrain_run))
    assert cli.main(["--config", str(path), *[str(notes) if a == "NOTES" else a for a in arguments]]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and message in errors[0] and "mmap" not in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_a_training_batch_of_one_is_refused_before_the_run_folder_exists(config_file, tmp_path, caplog):
    """UPerNet's pooled 1x1 branch normalises with BatchNorm, which has one value per channel in a
    training batch of one: refused at start, with the settings that work, not a traceback."""
    assert cli.main(["--config", str(config_file()), "data.batch_size=1"]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "data.batch_size=1" in errors[0] and "BatchNorm" in errors[0], errors
    assert "data.batch_size=2" in errors[0] and "--head maestro" in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_a_last_evaluation_batch_of_one_is_fine(finetune_config, tmp_path, monkeypatch):
    """Training batches are always full (the stream is resampled); validation and test batches of
    one, the end of a 4-patch split in batches of 3, use BatchNorm's running statistics."""
    seen = []
    original = FinetuneTask.test_step

    def spy(self, batch, batch_idx):
        seen.append(batch["labels"]["lc"].shape[0])
        return original(self, batch, batch_idx)

    config = finetune_config(
        tmp_path,
        "data.batch_size=3",
        "data.batches_per_epoch=1",
        "trainer.max_epochs=1",
        "eval.num_figures=0",
    )
    monkeypatch.setattr(FinetuneTask, "test_step", spy)
    scores = run(config)
    assert sorted(seen) == [1, 3] and scores.support.sum() > 0


class _Reached(Exception):
    pass


def test_the_same_shards_pass_the_checks_for_the_inputs_and_label_they_hold(
    config_file, shards_without_lpis_and_s1_des, monkeypatch
):
    def reached(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr(stage, "fit_for_best", reached)
    path = config_file(shards=shards_without_lpis_and_s1_des, split="val")
    with pytest.raises(_Reached):  # the checks passed and training would start
        cli.main(["--config", str(path), "--task", "lc", "--modalities", "aerial,dem,s2,s1_asc"])


# ------------------------------------------------------------------------------------- resume
class _Interrupt(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def _train_losses(out: Path) -> dict[int, float]:
    losses = {}
    for path in sorted((out / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            losses.update(
                {
                    int(row["step"]): float(row["train/loss"])
                    for row in csv.DictReader(handle)
                    if row.get("train/loss")
                }
            )
    return losses


def test_an_interrupted_finetuning_resumes_with_the_same_losses_and_scores(finetuned_run, tmp_path):
    expected = _train_losses(finetuned_run.out)
    assert sorted(expected) == list(range(8))
    config = finetuned_run.config
    crashed = dataclasses.replace(
        config, trainer=dataclasses.replace(config.trainer, output_dir=tmp_path / "run")
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, callbacks=[_Interrupt(at_step=3)])  # mid-epoch 0, after the step-2 checkpoint
    scores = run(crashed, resume="last")
    resumed = _train_losses(tmp_path / "run")
    assert sorted(resumed) == sorted(expected)
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    np.testing.assert_array_equal(scores.confusion, finetuned_run.scores.confusion)


# --------------------------------------------------------------------------------- as typed
def test_the_default_command_names_the_missing_example_run(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--task", "lpis", "--level", "2"]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "no pretrained weights at example/runs/pretrain" in errors[0], errors
    assert "make example" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_the_default_command_names_the_missing_example_shards(
    tiny_pretrain_run, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--task", "lpis", "--level", "2", "--init", str(tiny_pretrain_run)]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "example/shards" in errors[0], errors
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------- eval-only
def _copy_run(finetuned_run, dest: Path) -> Path:
    shutil.copytree(finetuned_run.out, dest, symlinks=True)
    shutil.rmtree(dest / "test")
    return dest


def test_eval_only_tests_the_run_in_its_default_folder_with_its_own_config(
    finetuned_run, tmp_path, monkeypatch, caplog
):
    """As typed in the README: no --config, no --init; the run (a tiny encoder, 32-channel decoder,
    not today's defaults) is found in the task's default folder and tested with its config.yaml."""
    monkeypatch.chdir(tmp_path)
    run_folder = _copy_run(finetuned_run, tmp_path / "runs" / "finetune" / "lc-level1")
    assert cli.main(["--task", "lc", "--eval-only", "eval.num_figures=0"]) == 0, _errors(caplog)
    metrics = yaml.safe_load((run_folder / "test" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(float(finetuned_run.scores.miou))
    assert not (run_folder / "test" / "samples.png").exists()  # eval.* overrides apply
    assert list((run_folder / "test").glob("predictions/*.tif"))  # the run's own eval.save_predictions


def test_eval_only_takes_the_run_named_by_output_dir_and_refuses_another_model(
    finetuned_run, tmp_path, caplog
):
    run_folder = _copy_run(finetuned_run, tmp_path / "moved")
    refused = ["--eval-only", "--output-dir", str(run_folder), "--head", "maestro", "trainer.max_epochs=9"]
    assert cli.main(refused) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "model.head=maestro (the run's: uperfuse)" in errors[0], errors
    assert "max_epochs" not in errors[0] and not (run_folder / "test").exists()
    caplog.clear()
    argv = [
        "--eval-only",
        "--output-dir",
        str(run_folder),
        "eval.save_predictions=false",
        "data.batch_size=3",
    ]
    assert cli.main([*argv, "eval.num_figures=0", "trainer.max_epochs=9"]) == 0, _errors(caplog)
    assert (run_folder / "test" / "metrics.json").is_file()
    assert not (run_folder / "test" / "predictions").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("keeps the run's own ['trainer.max_epochs']" in w for w in warnings), warnings


# ------------------------------------------------------------------------------- run folders
@pytest.mark.parametrize(
    ("overrides", "folder"),
    [
        ((), "lc-level1"),
        (("model.head=maestro",), "lc-level1-maestro-head"),
        (("model.probe=true", "model.head=linear"), "lc-level1-probe"),  # what --probe sets
        (("model.probe=true",), "lc-level1-probe-uperfuse-head"),
        (("model.probe=true", "model.head=maestro"), "lc-level1-probe-maestro-head"),
        (
            ("model.architecture=swin-utae", "model.pretrained=false", "task.name=lpis"),
            "lpis-level1-swin-utae",
        ),
        (("model.architecture=unet", "model.pretrained=false", "task.name=flair2"), "flair2-level1-unet"),
    ],
)
def test_every_kind_of_run_has_its_own_default_folder(finetune_config, overrides, folder):
    default = FinetuneTrainerConfig.output_dir
    resolved, _ = resolve(finetune_config(default, *overrides))
    assert resolved.trainer.output_dir == default / folder
    assert resolve(finetune_config(Path("mine"), *overrides))[0].trainer.output_dir == Path("mine")
