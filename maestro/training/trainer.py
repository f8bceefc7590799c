"""The Lightning trainer every stage runs under, and the run-directory rules around ``fit``.

One place decides strategy, precision, checkpoints, loggers and how a run starts or resumes, so
pretraining and fine-tuning behave alike on one CPU and on many GPU nodes. Which checkpoints are
kept and which one a resume takes is :mod:`maestro.training.checkpoints`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from maestro.config import to_dict
from maestro.errors import ConfigError
from maestro.models.transformer import Block
from maestro.training import fp8, memory
from maestro.training.checkpoints import (
    best_checkpoint,
    checkpoint_callbacks,
    checkpoint_step,
    latest_checkpoint,
    resolve_resume,
    resume_advice,
)
from maestro.training.config import FP8, StageConfig, TrainerConfig
from maestro.training.logs import run_loggers
from maestro.training.profiling import StepProfiler
from maestro.training.signals import HostSideStopSignal
from maestro.training.task import TrainingTask
from maestro.training.throughput import TrainingEta, TrainingThroughput

__all__ = ["build_trainer", "latest_checkpoint", "resolve_resume", "run_stage", "run_test"]

log = logging.getLogger(__name__)

_NOISE = ("💡 Tip:", "`Trainer(limit_val_batches=")
"""Lightning info lines a user cannot act on: product tips, and a note about a Trainer argument
that our configs call ``data.val_batches``."""


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


def quiet_lightning() -> None:
    """Drop :data:`_NOISE` from Lightning's rank-zero log; its warnings and other lines stay."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())


@contextlib.contextmanager
def lightning_warnings() -> Iterator[None]:
    """Lightning's warnings, less one a user cannot act on (warning filters are restored on exit):
    Lightning 2.6 builds torch's deprecated ``LeafSpec`` on every step, a ``FutureWarning`` with
    torch >= 2.14. Stages add their own expected warnings inside."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree"
        )
        yield


STEP_METRICS_SHOWN = ("train/loss",)
"""Per-step training metrics the progress bar shows. Stages log them without ``prog_bar``:
Lightning converts progress-bar metrics to Python numbers after every batch, a GPU sync per step
that keeps the host from queueing the next one; the bar reads them only when it refreshes."""


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, showing :data:`STEP_METRICS_SHOWN` at each refresh, and also closed
    when training fails: an open bar redraws itself after the traceback, or at interpreter exit
    (after pytest's summary, in tests of crashes)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        for key in STEP_METRICS_SHOWN:
            value = trainer.callback_metrics.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                items[key] = value.item()
        return items

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        for bar in (
            self._train_progress_bar,
            self._val_progress_bar,
            self._test_progress_bar,
            self._predict_progress_bar,
        ):
            if bar is not None:
                bar.close()


class WriteRunConfig(L.Callback):
    """Writes the resolved ``config.yaml`` when training starts, i.e. after a resumed checkpoint
    passed the model and schedule checks: a refused resume leaves the run's config as it was."""

    def __init__(self, config: StageConfig):
        self.config = config

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            out = Path(self.config.trainer.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False))


def build_strategy(config: TrainerConfig) -> Strategy | str:
    if config.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Every parameter takes part in every step (all modalities are always present). Buffers are
        # fixed encodings: broadcasting them would add a collective to every forward, which hangs
        # validation when ranks see different numbers of batches (each sample exactly once).
        return DDPStrategy(find_unused_parameters=False, broadcast_buffers=False)
    if config.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy={Block}, sharding_strategy="FULL_SHARD", state_dict_type="full")
    return "auto"


def default_precision(config: TrainerConfig) -> str:
    """Lightning's precision for the run: the configured one, else bf16-mixed on GPU and 32-true on
    CPU. FP8 runs under bf16-mixed: only the converted linear layers (:mod:`maestro.training.fp8`)
    multiply in FP8, everything around them autocasts to bf16."""
    if config.precision == FP8:
        return "bf16-mixed"
    if config.precision is not None:
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def runs_on_cpu(config: TrainerConfig) -> bool:
    return config.accelerator == "cpu" or not torch.cuda.is_available()


def build_trainer(
    config: StageConfig, callbacks: Sequence[L.Callback] = (), from_step: int | None = None
) -> L.Trainer:
    """Lightning trainer for ``config``; ``callbacks`` are the stage's own (images, metrics, ...).
    ``from_step`` is the optimizer step training starts from: the run's logs keep what was logged
    before it (:func:`maestro.training.logs.run_loggers`; None keeps everything, for a test)."""
    trainer_config = config.trainer
    out = Path(trainer_config.output_dir)
    if trainer_config.strategy == "fsdp" and runs_on_cpu(
        trainer_config
    ):  # Lightning's own error is a traceback
        raise ConfigError("strategy 'fsdp' needs GPUs (Lightning's FSDP runs on CUDA only); use 'ddp' on CPU")
    quiet_lightning()
    defaults = [
        *checkpoint_callbacks(out, trainer_config),
        LearningRateMonitor(logging_interval="step"),
        TrainingThroughput(every_n_steps=trainer_config.log_every_n_steps),
        TrainingEta(),
        # Each refresh reads the logged losses off the device (a sync): once per logging window, not per step.
        ProgressBar(refresh_rate=trainer_config.log_every_n_steps),
        HostSideStopSignal(),  # no host-device sync per step for the SIGTERM agreement between ranks
    ]
    if trainer_config.profile_steps is not None:
        defaults.append(StepProfiler(*trainer_config.profile_steps, out_dir=out / "profile"))
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
        # No validation split: no validation loop (rather than an empty loader Lightning warns about).
        limit_val_batches=0 if config.data.val is None else config.data.val_batches,
        deterministic=trainer_config.deterministic,
        callbacks=[*defaults, *callbacks],
        logger=run_loggers(out, from_step),
        use_distributed_sampler=False,  # the shard loader splits by rank itself
        num_sanity_val_steps=0,
    )


def run_stage(
    config: StageConfig,
    task_class: type[TrainingTask],
    datamodule: L.LightningDataModule,
    callbacks: Sequence[L.Callback] = (),
    resume: str | None = None,
) -> L.Trainer:
    """Seed, build the task (so its initial weights follow ``trainer.seed``) and train; the resolved
    ``config.yaml`` is written once training starts. ``resume`` is a checkpoint path, or ``"last"``
    for the run's newest."""
    if config.trainer.precision == FP8:  # the CLIs check this already; a Python caller may not have
        fp8.check_supported(config.trainer)
    L.seed_everything(config.trainer.seed, workers=True)
    if torch.cuda.is_available():  # TF32 for the few fp32 matrix products left outside bf16 autocast
        torch.set_float32_matmul_precision("high")
    ckpt_path = resolve_resume(Path(config.trainer.output_dir), resume)
    task = task_class(config)
    task.check_batch_size()
    sample = task.sample_memory()
    if sample is not None and runs_on_cpu(config.trainer) and rank_zero_only.rank == 0:
        memory.report(memory.step_memory(task.model, sample, config.data), memory.available_memory())
    from_step = 0 if ckpt_path is None else checkpoint_step(ckpt_path)
    trainer = build_trainer(config, [WriteRunConfig(config), *callbacks], from_step=from_step)
    with lightning_warnings():
        # resolve_resume already refuses a fresh run into a directory with checkpoints; what else a
        # checkpoint directory holds (a resumed run's files, the run's own logs beside a stage's
        # best checkpoint) is expected, so Lightning's warning about it says nothing new.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # Logging windows count optimizer steps across epochs: a run with fewer batches per epoch
        # than trainer.log_every_n_steps still logs every window, whatever this warning suggests.
        warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
        if only_frozen_parts_in_eval(task):  # a frozen encoder (linear probe) stays in eval on purpose
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException as stopped:
            stopped.advice = resume_advice(Path(config.trainer.output_dir))  # for the CLI's last line
            raise
    return trainer


def only_frozen_parts_in_eval(module: torch.nn.Module) -> bool:
    """Whether every submodule in eval mode trains nothing. Lightning warns about any module in eval
    mode at the start of training; for a frozen part (no parameter that requires a gradient) that is
    the intent, for a part that trains it may be a mistake, and the warning stays."""
    return all(
        not any(p.requires_grad for p in part.parameters()) for part in module.modules() if not part.training
    )


def run_test(
    trainer: L.Trainer, task: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: Path | None
) -> None:
    """``trainer.test`` on the weights of ``ckpt_path`` (None: the task's own). Testing reads only the
    weights: what Lightning says about the checkpoint's callback states (callbacks an evaluation-only
    trainer does not have, a checkpoint folder that has moved with its run) concerns resuming."""
    with lightning_warnings():
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks")
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        trainer.test(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


def fit_for_best(
    config: StageConfig,
    task_class: type[TrainingTask],
    datamodule: L.LightningDataModule,
    monitor: str,
    mode: str,
    callbacks: Sequence[L.Callback] = (),
    resume: str | None = None,
) -> tuple[L.Trainer, Path | None]:
    """:func:`run_stage`, keeping ``best.ckpt`` by ``monitor`` when there is a validation split;
    returns the trainer and the checkpoint a stage then tests (None: the final weights)."""
    best = best_checkpoint(Path(config.trainer.output_dir), monitor, mode)
    validated = config.data.val is not None
    trainer = run_stage(
        config, task_class, datamodule, [best, *callbacks] if validated else list(callbacks), resume
    )
    ckpt = Path(best.best_model_path) if best.best_model_path else None
    log.info("testing %s", ckpt or "the final weights (no validation split to pick a best checkpoint)")
    return trainer, ckpt
