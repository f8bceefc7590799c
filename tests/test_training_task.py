"""The shared task base with a toy stage (a linear regression): what any stage gets for free."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from maestro.config import from_dict, to_dict
from maestro.errors import ConfigError
from maestro.training.config import DataConfig, TrainerConfig
from maestro.training.optim import OptimConfig
from maestro.training.task import TrainingTask
from maestro.training.trainer import build_trainer, run_stage


@dataclass(frozen=True)
class ToyModelConfig:
    width: int = 4


@dataclass(frozen=True)
class ToyConfig:
    data: DataConfig
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(base_lr=1e-2))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class ToyTask(TrainingTask):
    config_class = ToyConfig

    def build_model(self) -> nn.Module:
        return nn.Linear(self.config.model.width, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.eval_model(x), y))


class ToyData(L.LightningDataModule):
    def __init__(self, width: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(16, width, generator=generator)
        self.dataset = TensorDataset(x, x.sum(1, keepdim=True))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=8)


def _config(out: Path, width: int = 4, **trainer: Any) -> ToyConfig:
    return ToyConfig(
        data=DataConfig(train="in-memory", val="in-memory", batch_size=4),
        model=ToyModelConfig(width=width),
        trainer=TrainerConfig(
            **{
                "output_dir": out,
                "max_epochs": 2,
                "accelerator": "cpu",
                "devices": 1,
                "ema_decay": 0.5,
                "checkpoint_every_n_steps": 3,
                "log_every_n_steps": 1,
                **trainer,
            }
        ),
    )


def test_the_base_needs_a_model():
    with pytest.raises(TypeError, match="build_model"):
        TrainingTask(to_dict(_config(Path("unused"))))


def test_a_task_is_built_from_its_config_or_its_hyperparameters():
    config = _config(Path("unused"))
    task = ToyTask(to_dict(config))
    assert task.config == config
    assert task.hparams["config"] == to_dict(config)
    assert ToyTask(config).hparams["config"] == to_dict(config)


def test_a_stage_trains_with_ema_checkpoints_and_refuses_incompatible_resumes(tmp_path):
    config = _config(tmp_path / "run")
    trainer = run_stage(config, ToyTask, ToyData(4))
    task = trainer.lightning_module
    # The EMA copy is evaluated but never part of the module tree (nor of DDP or the optimizer).
    assert task.ema is not None and task.eval_model is task.ema.module
    assert not any(name.startswith("ema") for name, _ in task.named_parameters())
    assert not torch.equal(task.ema.module.weight, task.model.weight)
    out = tmp_path / "run"
    written = (out / "config.yaml").read_text()
    assert from_dict(ToyConfig, yaml.safe_load(written)) == config
    # Saved at steps 3, 4 (epoch end), 6 and 8 (epoch end): the newest 3 are kept, last.ckpt links to step 8.
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "last.ckpt",
        "step0000004.ckpt",
        "step0000006.ckpt",
        "step0000008.ckpt",
    ]
    assert (folder / "last.ckpt").resolve() == (folder / "step0000008.ckpt").resolve()
    checkpoint = torch.load(folder / "step0000008.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8 and "ema_state_dict" in checkpoint
    assert checkpoint["hyper_parameters"]["config"] == to_dict(config)

    with pytest.raises(FileExistsError, match="--resume"):
        run_stage(config, ToyTask, ToyData(4))
    with pytest.raises(ConfigError, match="nothing to resume: .* finished run"):
        run_stage(config, ToyTask, ToyData(4), resume="last")
    with pytest.raises(ConfigError, match="another model config"):
        run_stage(_config(out, width=5), ToyTask, ToyData(5), resume=str(folder / "step0000006.ckpt"))
    with pytest.raises(ConfigError, match="schedule spans 8 optimizer steps but this run would span 12"):
        run_stage(_config(out, max_epochs=3), ToyTask, ToyData(4), resume=str(folder / "step0000006.ckpt"))
    assert (out / "config.yaml").read_text() == written  # refused resumes leave the run's config alone


def test_step_checkpoints_hold_the_ema_of_their_step(tmp_path):
    # Step 8 is saved by the step trigger, in a batch-end hook; the EMA must already include step 8.
    trainer = run_stage(_config(tmp_path, checkpoint_every_n_steps=4), ToyTask, ToyData(4))
    saved = torch.load(tmp_path / "checkpoints" / "step0000008.ckpt", weights_only=True)["ema_state_dict"]
    final = trainer.lightning_module.ema.state_dict()
    assert saved.keys() == final.keys()
    for key in final:
        torch.testing.assert_close(saved[key], final[key], rtol=0, atol=0, msg=key)


def test_keep_one_checkpoint_and_the_best_by_a_monitored_metric(tmp_path):
    run_stage(_config(tmp_path, keep_checkpoints=1, monitor="val/loss"), ToyTask, ToyData(4))
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt", "step0000008.ckpt"]
    best = torch.load(folder / "best.ckpt", weights_only=True)
    assert best["callbacks"] and best["global_step"] in (4, 8)


class _Crash(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            raise RuntimeError("simulated crash")


def test_a_crashed_run_closes_its_progress_bar(tmp_path):
    # An open tqdm bar redraws itself at interpreter exit (e.g. after pytest's summary).
    config = _config(tmp_path)
    trainer = build_trainer(config, [_Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(ToyTask(config), datamodule=ToyData(4))
    assert trainer.progress_bar_callback.train_progress_bar.disable  # tqdm's state once closed


def test_no_ema_when_disabled_or_sharded():
    assert not ToyTask(_config(Path("unused"), ema_decay=0.0)).uses_ema
    assert not ToyTask(_config(Path("unused"), strategy="fsdp")).uses_ema
