import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from maestro.errors import ConfigError
from maestro.training.checkpoints import RunCheckpoints, checkpoint_step
from maestro.training.config import DataConfig, TrainerConfig
from maestro.training.optim import OptimConfig
from maestro.training.throughput import TrainingEta
from maestro.training.trainer import (
    build_strategy,
    build_trainer,
    default_precision,
    latest_checkpoint,
    resolve_resume,
)


@dataclass(frozen=True)
class _Stage:
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _checkpoint(path: Path, step: int, total_steps: int = 100, mtime_ns: int = 1_000) -> Path:
    """A minimal checkpoint file: the entries the run-directory rules read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "lr_schedulers": [{"total_steps": total_steps}]}, path)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_latest_checkpoint_is_the_highest_step_whatever_the_file_times(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    folder = tmp_path / "checkpoints"
    newest = _checkpoint(folder / "step0000009.ckpt", 9, mtime_ns=1_000)
    _checkpoint(folder / "step0000003.ckpt", 3, mtime_ns=3_000)  # restored from a backup later
    _checkpoint(folder / "best.ckpt", 3, mtime_ns=4_000)
    (folder / "last.ckpt").symlink_to("step0000009.ckpt")
    assert latest_checkpoint(tmp_path) == newest
    _checkpoint(
        folder / "epoch002.ckpt", 12
    )  # older runs named epoch-end checkpoints by epoch: read from the file
    assert latest_checkpoint(tmp_path) == folder / "epoch002.ckpt"
    assert checkpoint_step(folder / "epoch002.ckpt") == 12 and checkpoint_step(newest) == 9


def test_resume_rules(tmp_path):
    assert resolve_resume(tmp_path, None) is None
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        resolve_resume(tmp_path, "last")
    checkpoint = _checkpoint(tmp_path / "checkpoints" / "step0000003.ckpt", 3, total_steps=8)
    with pytest.raises(FileExistsError, match="--resume"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, "last") == checkpoint
    assert resolve_resume(tmp_path, str(checkpoint)) == checkpoint
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        resolve_resume(tmp_path, str(tmp_path / "missing.ckpt"))
    finished = _checkpoint(tmp_path / "checkpoints" / "step0000008.ckpt", 8, total_steps=8)
    with pytest.raises(
        ConfigError, match="nothing to resume: .* finished run .step 8 of its 8-step schedule"
    ):
        resolve_resume(tmp_path, "last")
    assert (
        resolve_resume(tmp_path, str(checkpoint)) == checkpoint
    )  # an earlier checkpoint of it still resumes
    finished.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        resolve_resume(tmp_path, str(finished))


def test_fsdp_on_cpu_is_a_config_error_before_lightning_starts(tmp_path):
    config = _Stage(DataConfig(train="unused"), trainer=TrainerConfig(strategy="fsdp", accelerator="cpu"))
    with pytest.raises(ConfigError, match="fsdp.*needs GPUs.*ddp"):
        build_trainer(config)


def test_strategies_and_precision():
    ddp = build_strategy(TrainerConfig(strategy="ddp"))
    assert isinstance(ddp, DDPStrategy) and ddp._ddp_kwargs["broadcast_buffers"] is False
    assert isinstance(build_strategy(TrainerConfig(strategy="fsdp")), FSDPStrategy)
    assert build_strategy(TrainerConfig()) == "auto"
    assert default_precision(TrainerConfig(accelerator="cpu")) == "32-true"
    assert default_precision(TrainerConfig(precision="16-mixed")) == "16-mixed"


def test_trainer_has_checkpoints_lr_monitor_loggers_and_the_stage_callbacks(tmp_path):
    class StageCallback(Callback):
        pass

    config = _Stage(
        data=DataConfig(train="unused", val="unused", val_batches=3),
        trainer=TrainerConfig(output_dir=tmp_path, accelerator="cpu", devices=1, checkpoint_every_n_steps=7),
    )
    trainer = build_trainer(config, [StageCallback()])
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert {Path(c.dirpath) for c in checkpoints} == {tmp_path / "checkpoints"}
    # The newest 3 by step, last.ckpt linking to the newest; no best.ckpt unless a metric is monitored.
    [rolling] = checkpoints
    assert isinstance(rolling, RunCheckpoints) and rolling.filename == "step{step:07d}"
    assert (rolling.save_top_k, rolling.monitor, rolling.mode, rolling.save_last) == (
        3,
        "step",
        "max",
        "link",
    )
    best = _Stage(
        data=config.data,
        trainer=TrainerConfig(output_dir=tmp_path, accelerator="cpu", keep_checkpoints=1, monitor="val/loss"),
    )
    names = sorted((c.filename, c.save_top_k, c.monitor) for c in build_trainer(best).checkpoint_callbacks)
    assert names == [("best", 1, "val/loss"), ("step{step:07d}", 1, "step")]
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    assert any(isinstance(c, TrainingEta) for c in trainer.callbacks)  # planned steps and an ETA
    assert any(isinstance(c, StageCallback) for c in trainer.callbacks)
    [tensorboard, csv_logger] = trainer.loggers
    assert isinstance(tensorboard, TensorBoardLogger) and isinstance(csv_logger, CSVLogger)
    assert trainer.limit_val_batches == 3 and trainer.num_sanity_val_steps == 0
    assert (
        build_trainer(_Stage(data=DataConfig(train="unused"), trainer=config.trainer)).limit_val_batches == 0
    )


def test_lightning_tips_and_the_limit_val_batches_note_are_not_shown(tmp_path):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        for val_batches in (None, 1):
            build_trainer(
                _Stage(
                    data=DataConfig(train="unused", val="unused", val_batches=val_batches),
                    trainer=TrainerConfig(output_dir=tmp_path, accelerator="cpu", devices=1),
                )
            )
    finally:
        logger.removeHandler(handler)
    messages = [record.getMessage() for record in records]
    assert messages and not [m for m in messages if "Tip" in m or "limit_val_batches" in m], messages


def test_the_step_loss_reaches_the_progress_bar_without_a_per_step_conversion(tmp_path):
    """Progress-bar metrics are turned into Python numbers after every batch (a GPU sync); the
    step loss is logged without ``prog_bar`` and read by the bar when it refreshes instead."""
    import lightning as L

    from maestro.training.trainer import ProgressBar

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    config = _Stage(
        data=DataConfig(train="unused"),
        trainer=TrainerConfig(output_dir=tmp_path, accelerator="cpu", devices=1, max_steps=3),
    )
    trainer = build_trainer(config)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(6, 2)), batch_size=2)
    trainer.fit(Tiny(), loader)
    [bar] = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert "train/loss" not in trainer.progress_bar_metrics
    shown = bar.get_metrics(trainer, trainer.lightning_module)
    assert shown["train/loss"] == pytest.approx(trainer.callback_metrics["train/loss"].item())


class _CrashAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _logged_steps(out: Path, key: str) -> list[int]:
    import csv

    [metrics] = list((out / "csv").glob("*/metrics.csv"))
    with metrics.open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get(key)]


def test_a_resumed_run_has_one_last_checkpoint_and_continues_its_own_logs(tmp_path):
    """Crash at step 3, after the first checkpoint (step 2, which also logged step 2 before the
    crash), resume: last.ckpt links to the newest, no last-v1.ckpt, and one log folder per logger
    whose CSV holds every step once (the interrupted run's rows past the checkpoint are replaced)."""
    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.trainer import run_stage

    config = _config(tmp_path, checkpoint_every_n_steps=2, keep_checkpoints=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stage(config, ToyTask, ToyData(4), [_CrashAt(3)])
    assert _logged_steps(tmp_path, "train/loss") == [0, 1, 2]
    run_stage(config, ToyTask, ToyData(4), resume="last")
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000006.ckpt", "step0000008.ckpt"]
    assert (folder / "last.ckpt").resolve() == (folder / "step0000008.ckpt").resolve()
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["version_0"]
    assert [p.name for p in (tmp_path / "tensorboard").iterdir()] == ["version_0"]
    assert _logged_steps(tmp_path, "train/loss") == list(range(8))
    assert _logged_steps(tmp_path, "val/loss") == [3, 7]


class _Terminate(Callback):
    """A SIGTERM (a preempted job) arriving before the batch of optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class _NoConfig:
    pass


@pytest.mark.parametrize(
    ("step", "advice"),
    [
        (1, "nothing was saved yet: there is no checkpoint to --resume from"),
        (3, "--resume continues the run from its newest checkpoint, step0000003.ckpt (step 3)"),
    ],
)
def test_a_sigterm_says_whether_resume_has_anything_to_continue(tmp_path, caplog, step, advice):
    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.cli import run_cli, stage_parser
    from maestro.training.trainer import run_stage

    def run(config, resume):
        run_stage(_config(tmp_path), ToyTask, ToyData(4), [_Terminate(step)])  # checkpoints every 3 steps

    assert run_cli(stage_parser("stage", None, config_required=False), _NoConfig, run, []) == 143
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "stopped by SIGTERM" in warning and advice in warning, warning
    if step == 1:
        assert "--resume continues" not in warning


def test_fewer_batches_per_epoch_than_the_logging_interval_draw_no_warning(tmp_path, recwarn):
    """Steps are counted across epochs, so every logging window is still logged: Lightning's
    warning about it says nothing a user can act on."""
    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.trainer import run_stage

    run_stage(_config(tmp_path, log_every_n_steps=5), ToyTask, ToyData(4))  # 4 batches per epoch
    assert not [w for w in recwarn if "logging interval" in str(w.message)], [str(w.message) for w in recwarn]
    assert _logged_steps(tmp_path, "train/loss") == [4]  # the step-5 window was logged all the same


class _FirstLayerInEval(torch.nn.Module):
    """Two layers whose first stays in eval mode, frozen (as a linear probe's encoder) or not."""

    def __init__(self, width: int, frozen: bool):
        super().__init__()
        self.first = torch.nn.Linear(width, width).requires_grad_(not frozen)
        self.last = torch.nn.Linear(width, 1)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        self.first.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.first(x))


@pytest.mark.parametrize("frozen", [True, False])
def test_a_frozen_part_in_eval_mode_draws_no_warning_a_trained_one_does(tmp_path, recwarn, frozen):
    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.trainer import only_frozen_parts_in_eval, run_stage

    class Task(ToyTask):
        def build_model(self):
            return _FirstLayerInEval(self.config.model.width, frozen)

    config = _config(tmp_path, max_epochs=1)
    assert only_frozen_parts_in_eval(Task(config)) is frozen
    run_stage(config, Task, ToyData(4))
    warned = [str(w.message) for w in recwarn if "in eval mode" in str(w.message)]
    assert bool(warned) is not frozen, warned


def test_testing_a_checkpoint_of_a_moved_run_draws_no_callback_warnings(tmp_path, recwarn):
    """An evaluation-only trainer has no ModelCheckpoint, and a copied run's checkpoint names its old
    folder: both concern resuming, and ``run_test`` reads only the weights."""
    import shutil

    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.trainer import build_trainer, fit_for_best, run_test

    class Task(ToyTask):
        test_step = ToyTask.validation_step

    class Data(ToyData):
        test_dataloader = ToyData.val_dataloader

    _, best = fit_for_best(_config(tmp_path / "run", max_epochs=1), Task, Data(4), "val/loss", "min")
    shutil.copytree(tmp_path / "run", tmp_path / "moved")
    moved = _config(tmp_path / "moved", max_epochs=1)
    recwarn.clear()
    run_test(
        build_trainer(moved), Task(moved), Data(4), tmp_path / "moved" / best.relative_to(tmp_path / "run")
    )
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "ckpt_path" in m or "dirpath has changed" in m], messages


def test_a_run_shows_no_warning_from_lightnings_use_of_a_deprecated_torch_api(tmp_path, recwarn):
    """Lightning 2.6 builds torch's deprecated ``LeafSpec`` on every step (a FutureWarning with torch
    >= 2.14): nothing a user can act on."""
    from test_training_task import ToyData, ToyTask, _config

    from maestro.training.trainer import run_stage

    run_stage(_config(tmp_path, max_epochs=1), ToyTask, ToyData(4))
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)], [str(w.message) for w in recwarn]
