"""The Lightning trainer every stage runs under, and the run-directory rules around ``fit``.

One place decides strategy, precision, checkpoints, loggers and how a run starts or resumes, so
pretraining and fine-tuning behave alike on one CPU and on many GPU nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import Strategy

from maestro.config import to_dict
from maestro.training.config import StageConfig, TrainerConfig
from maestro.training.task import TrainingTask

log = logging.getLogger(__name__)


def build_strategy(config: TrainerConfig) -> Strategy | str:
    if config.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Every parameter takes part in every step (all modalities are always present). Buffers are
        # fixed encodings: broadcasting them would add a collective to every forward, which hangs
        # validation when ranks see different numbers of batches (each sample exactly once).
        return DDPStrategy(find_unused_parameters=False, broadcast_buffers=False)
    if config.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from maestro.models.transformer import Block

        return FSDPStrategy(auto_wrap_policy={Block}, sharding_strategy="FULL_SHARD", state_dict_type="full")
    return "auto"


def default_precision(config: TrainerConfig) -> str:
    """The configured precision, else bf16-mixed on GPU and 32-true on CPU."""
    if config.precision is not None:
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def checkpoint_callbacks(output_dir: Path, every_n_steps: int) -> list[ModelCheckpoint]:
    """Every ``every_n_steps`` optimizer steps, and at every epoch end so that the end of
    training always leaves a checkpoint to resume from."""
    steps = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps,
        save_top_k=-1,
    )
    epochs = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        save_top_k=-1,
    )
    return [steps, epochs]


def build_trainer(config: StageConfig, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Lightning trainer for ``config``; ``callbacks`` are the stage's own (images, metrics, ...)."""
    trainer_config = config.trainer
    out = Path(trainer_config.output_dir)
    defaults = [
        *checkpoint_callbacks(out, trainer_config.checkpoint_every_n_steps),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(refresh_rate=1),
    ]
    # A new version_N per launch: a resumed run never overwrites the logs of the interrupted one.
    loggers = [TensorBoardLogger(save_dir=out, name="tensorboard"), CSVLogger(save_dir=out, name="csv")]
    return L.Trainer(
        default_root_dir=out,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=build_strategy(trainer_config),
        precision=default_precision(trainer_config),
        max_epochs=trainer_config.max_epochs,
        max_steps=trainer_config.max_steps,
        gradient_clip_val=trainer_config.gradient_clip,
        accumulate_grad_batches=trainer_config.accumulate_grad_batches,
        log_every_n_steps=trainer_config.log_every_n_steps,
        check_val_every_n_epoch=trainer_config.val_every_n_epochs,
        limit_val_batches=config.data.val_batches if config.data.val_batches is not None else 1.0,
        deterministic=trainer_config.deterministic,
        callbacks=[*defaults, *callbacks],
        logger=loggers,
        use_distributed_sampler=False,  # the shard loader splits by rank itself
        num_sanity_val_steps=0,
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run (step and epoch checkpoints alike)."""
    candidates = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    return candidates[-1] if candidates else None


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from (``"last"``: the run's newest), or None for a fresh run.

    A fresh run into a directory that already holds checkpoints is refused: it would mix two runs.
    """
    if resume is None:
        if latest_checkpoint(run_dir) is not None:
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another trainer.output_dir"
            )
        return None
    ckpt_path = latest_checkpoint(run_dir) if resume == "last" else Path(resume)
    if ckpt_path is None or not ckpt_path.is_file():
        raise FileNotFoundError(f"cannot resume: no checkpoint {ckpt_path or run_dir / 'checkpoints'}")
    log.info("resuming from %s", ckpt_path)
    return ckpt_path


def run_stage(
    config: StageConfig,
    task_class: type[TrainingTask],
    datamodule: L.LightningDataModule,
    callbacks: Sequence[L.Callback] = (),
    resume: str | None = None,
) -> L.Trainer:
    """Seed, build the task (so its initial weights follow ``trainer.seed``), write the resolved
    ``config.yaml`` and train; ``resume`` is a checkpoint path, or ``"last"`` for the run's newest."""
    L.seed_everything(config.trainer.seed, workers=True)
    if torch.cuda.is_available():  # TF32 for the few fp32 matrix products left outside bf16 autocast
        torch.set_float32_matmul_precision("high")
    out = Path(config.trainer.output_dir)
    ckpt_path = resolve_resume(out, resume)
    task = task_class(config)
    trainer = build_trainer(config, callbacks)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer
