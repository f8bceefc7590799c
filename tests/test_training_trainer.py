import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from maestro.training.config import DataConfig, TrainerConfig
from maestro.training.optim import OptimConfig
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


def _touch(path: Path, mtime_ns: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_latest_checkpoint_is_the_newest_written_of_steps_and_epochs(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    _touch(tmp_path / "checkpoints" / "step0000009.ckpt", 1_000)
    newest = _touch(tmp_path / "checkpoints" / "epoch000.ckpt", 2_000)
    assert latest_checkpoint(tmp_path) == newest


def test_resume_rules(tmp_path):
    assert resolve_resume(tmp_path, None) is None
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        resolve_resume(tmp_path, "last")
    checkpoint = _touch(tmp_path / "checkpoints" / "step0000003.ckpt", 1_000)
    with pytest.raises(FileExistsError, match="--resume"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, "last") == checkpoint
    assert resolve_resume(tmp_path, str(checkpoint)) == checkpoint
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        resolve_resume(tmp_path, str(tmp_path / "missing.ckpt"))


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
        data=DataConfig(train="unused", val_batches=3),
        trainer=TrainerConfig(output_dir=tmp_path, accelerator="cpu", devices=1, checkpoint_every_n_steps=7),
    )
    trainer = build_trainer(config, [StageCallback()])
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert {Path(c.dirpath) for c in checkpoints} == {tmp_path / "checkpoints"}
    assert sorted(c.filename for c in checkpoints) == ["epoch{epoch:03d}", "step{step:07d}"]
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    assert any(isinstance(c, StageCallback) for c in trainer.callbacks)
    assert sorted(type(lg).__name__ for lg in trainer.loggers) == ["CSVLogger", "TensorBoardLogger"]
    assert trainer.limit_val_batches == 3 and trainer.num_sanity_val_steps == 0
