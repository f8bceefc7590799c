"""Training throughput in the logs: samples per second over all ranks, every few steps.

Lightning's ``ThroughputMonitor`` synchronises the GPU after every batch, which stalls the host
queueing the next step; this callback synchronises once per logging window, so a run measures
itself at the speed it would run anyway. Validation is not counted as training time: the window
starts again after it.

It also says whether the input pipeline or the model sets the pace: the share of the window the
training loop spent between two batches (waiting for the loader, pinning, the copy to the
device). The host queues GPU work ahead, so while the GPU is the bottleneck the loop blocks inside
the step and this share stays near zero; when the loader cannot keep up, it grows. With several
processes the largest share over ranks is logged too: one starved rank slows them all. GPU runs
also log their peak memory, so a configuration's footprint is read off its first window.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.data import extract_batch_size

from maestro.training.task import batch_size_of

SAMPLES_PER_SEC = "perf/samples_per_sec"
"""Training samples per second summed over ranks, over the last logging window."""
STEP_SECONDS = "perf/step_seconds"
"""Wall time per optimizer step over the last logging window."""
INPUT_WAIT = "perf/input_wait_fraction"
"""Share of the last window the training loop (rank 0) spent waiting for its next batch."""
INPUT_WAIT_MAX = "perf/input_wait_fraction_max"
"""The largest :data:`INPUT_WAIT` over ranks (runs of several processes only): the slowest-fed rank
holds every other at the gradient all-reduce, which their own share counts as step time."""
PEAK_MEMORY = "perf/peak_memory_gib"
"""GPU runs: the most memory tensors have held on the GPU since the process started, GiB (PyTorch's
allocator, without its cached free blocks), the largest over ranks."""
INPUT_BOUND = 0.2
"""Input wait above which a GPU run warns once that the loader, not the GPU, sets its pace."""
ETA_AFTER_STEPS = 5
"""Optimizer steps timed for the run's ETA, after its first (worker start-up, compilation)."""

log = logging.getLogger(__name__)


def sync_device(trainer: L.Trainer) -> None:
    """Wait for the work queued on the trainer's GPU (nothing to wait for on CPU)."""
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize(trainer.strategy.root_device)


def peak_memory_gib(device: torch.device) -> float | None:
    """The most memory tensors have held on ``device`` since the process started (None off GPUs)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def samples_in(batch: Any) -> int:
    """Samples in a batch: a model-sample batch counts its inputs, any other its first tensor."""
    if isinstance(batch, Mapping) and "inputs" in batch:
        return batch_size_of(batch)
    return extract_batch_size(batch)


class TrainingThroughput(L.Callback):
    """Logs :data:`SAMPLES_PER_SEC`, :data:`STEP_SECONDS`, :data:`INPUT_WAIT` (and with several
    processes :data:`INPUT_WAIT_MAX`, on GPUs :data:`PEAK_MEMORY`) every ``every_n_steps``
    optimizer steps."""

    def __init__(self, every_n_steps: int):
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        self.every_n_steps = every_n_steps
        self._start: float | None = None
        self._start_step = 0
        self._samples = 0
        self._waited = 0.0
        self._batch_end: float | None = None
        self._warned = False

    def _restart(self, trainer: L.Trainer) -> None:
        sync_device(trainer)
        self._start, self._start_step, self._samples = time.perf_counter(), trainer.global_step, 0
        self._waited, self._batch_end = 0.0, self._start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restart(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_end is not None:
            self._waited += time.perf_counter() - self._batch_end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += samples_in(batch)
        steps = trainer.global_step - self._start_step
        if self._start is None or steps < self.every_n_steps:
            self._batch_end = time.perf_counter()
            return
        sync_device(trainer)
        seconds = time.perf_counter() - self._start
        device = trainer.strategy.root_device
        peak = peak_memory_gib(device)
        local = [self._waited / seconds] + ([] if peak is None else [peak])
        largest = local
        if trainer.world_size > 1:  # every rank ends the window at the same step: one small collective
            largest = trainer.strategy.reduce(torch.tensor(local, device=device), reduce_op="max").tolist()
        if trainer.is_global_zero:  # every rank steps in lockstep with the same batch size
            metrics = {
                SAMPLES_PER_SEC: self._samples * trainer.world_size / seconds,
                STEP_SECONDS: seconds / steps,
                INPUT_WAIT: self._waited / seconds,
            }
            if trainer.world_size > 1:
                metrics[INPUT_WAIT_MAX] = largest[0]
            if peak is not None:
                metrics[PEAK_MEMORY] = largest[1]
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
            self._warn_if_input_bound(trainer, metrics.get(INPUT_WAIT_MAX, metrics[INPUT_WAIT]))
        self._start, self._start_step, self._samples = time.perf_counter(), trainer.global_step, 0
        self._waited, self._batch_end = 0.0, self._start

    def _warn_if_input_bound(self, trainer: L.Trainer, waited: float) -> None:
        """Once per run, past the first window (worker start-up, compilation), on GPUs only: on CPU
        the loader and the model share the same cores, and more workers would not help."""
        first_window = trainer.global_step <= self.every_n_steps
        if self._warned or first_window or waited <= INPUT_BOUND:
            return
        if trainer.strategy.root_device.type != "cuda":
            return
        self._warned = True
        log.warning(
            "the training loop (of the slowest-fed rank) waited for input %.0f%% of the last %d steps: "
            "the data loader, not the GPU, sets the pace. Give each GPU more CPU cores and loader "
            "workers (data.num_workers).",
            100 * waited,
            self.every_n_steps,
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._restart(trainer)


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``4 min 10 s`` or ``12 s``: an ETA's precision."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class TrainingEta(L.Callback):
    """Logs the optimizer steps a run plans when training starts, and once, after its first
    ``after_steps`` steps past the first one, the time the remaining steps should take at the pace
    measured (validation excluded): a long run says at once whether it fits its time limit."""

    def __init__(self, after_steps: int = ETA_AFTER_STEPS):
        if after_steps < 1:
            raise ValueError("after_steps must be >= 1")
        self.after_steps = after_steps
        self._first_step = 0
        self._mark: tuple[int, float] | None = None
        self._excluded = 0.0
        self._validation_start: float | None = None
        self._done = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total, done = int(trainer.estimated_stepping_batches), trainer.global_step
        self._first_step, self._mark, self._excluded, self._done = done, None, 0.0, False
        if not trainer.is_global_zero:
            return
        if trainer.max_steps != -1 and trainer.max_steps <= total:
            how = f"trainer.max_steps={trainer.max_steps}"
        else:
            how = f"{trainer.max_epochs} epochs of {trainer.num_training_batches} batches"
        resumed = f", resuming after step {done}" if done else ""
        log.info("planned: %d optimizer steps (%s)%s", total, how, resumed)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._done or trainer.global_step <= self._first_step:
            return
        if self._mark is None:  # the first step (loader start-up, compilation) is not timed
            sync_device(trainer)
            self._mark, self._excluded = (trainer.global_step, time.perf_counter()), 0.0
            return
        steps = trainer.global_step - self._mark[0]
        if steps < self.after_steps:
            return
        self._done = True
        total = int(trainer.estimated_stepping_batches)
        if not trainer.is_global_zero or trainer.global_step >= total:
            return
        sync_device(trainer)
        per_step = (time.perf_counter() - self._mark[1] - self._excluded) / steps
        left = per_step * (total - trainer.global_step)
        finish = datetime.datetime.now() + datetime.timedelta(seconds=left)
        log.info(
            "step %d of %d: %.3g s per optimizer step, about %s of training left (ETA %s; validation "
            "not included)",
            trainer.global_step,
            total,
            per_step,
            duration(left),
            finish.strftime("%Y-%m-%d %H:%M"),
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._excluded += time.perf_counter() - self._validation_start
            self._validation_start = None
