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
