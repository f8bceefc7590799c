"""``torch.profiler`` over a few optimizer steps of a real run: where the device's time goes.

A host sampler (py-spy) sees what the training loop waits on; only the device trace says whether
the GPU idles between kernels or runs work the model step alone would not (EMA, input scaling,
copies). ``trainer.profile_steps=[a, b]`` records optimizer steps ``a`` to ``b - 1`` on every rank
and writes, per rank, into ``<output_dir>/profile/``:

* ``rank<r>-trace.json.gz``: the timeline, for Perfetto or ``chrome://tracing``;
* ``rank<r>-ops.txt``: operators and kernels by device time;
* ``rank<r>-summary.json``: wall and device seconds per step, and the share of the wall time the
  device was busy (near 1: the model sets the pace; lower: the device waited on the host).

Steps past compilation and loader warm-up say what a long run does; the recorded steps run slower
(the profiler's own overhead), so throughput windows that include them are not representative.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

from maestro.training.throughput import sync_device

log = logging.getLogger(__name__)


def covered_length(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: overlapping work counts once."""
    covered, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            covered, reach = covered + end - start, end
        elif end > reach:
            covered, reach = covered + end - reach, end
    return covered


def device_seconds(events: Iterable[FunctionEvent]) -> tuple[float, float]:
    """(busy, summed) seconds of device work among profiler ``events``: the union of kernels',
    copies' and memsets' time ranges (what an idle gap lowers), and their plain sum (larger when
    streams overlap, e.g. the batch copy beside the model's kernels). ``record_function`` ranges
    shown on the device (``Optimizer.step#AdamW.step`` spans a whole Lightning step) are not work."""
    spans = [
        (event.time_range.start, event.time_range.end)
        for event in events
        if event.device_type != DeviceType.CPU and not getattr(event, "is_user_annotation", False)
    ]
    return covered_length(spans) / 1e6, sum(end - start for start, end in spans) / 1e6


class StepProfiler(L.Callback):
    """Profiles optimizer steps ``[start, stop)`` once per fit and writes the files above."""

    def __init__(self, start: int, stop: int, out_dir: Path):
        if not 0 <= start < stop:
            raise ValueError(f"profile steps need 0 <= start < stop, got [{start}, {stop})")
        self.start, self.stop, self.out_dir = start, stop, Path(out_dir)
        self._profiler: profile | None = None
        self._began = 0.0
        self._first_step = 0
        self._done = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._done or self._profiler is not None or not self.start <= trainer.global_step < self.stop:
            return  # a run resumed past the window records nothing
        activities = [ProfilerActivity.CPU]
        if trainer.strategy.root_device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        sync_device(trainer)  # work queued by earlier steps is not this window's
        self._profiler = profile(activities=activities)
        self._profiler.start()
        self._began, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._profiler is not None and trainer.global_step >= self.stop:
            self._finish(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._profiler is not None:  # the run ended inside the window: keep what was recorded
            self._finish(trainer)

    def _finish(self, trainer: L.Trainer) -> None:
        assert self._profiler is not None
        sync_device(trainer)
        wall = time.perf_counter() - self._began
        steps = max(trainer.global_step - self._first_step, 1)
        prof, self._profiler, self._done = self._profiler, None, True
        prof.stop()
        rank = trainer.global_rank
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out_dir / f"rank{rank}-trace.json.gz"))
        sort = (
            "self_device_time_total" if trainer.strategy.root_device.type == "cuda" else "self_cpu_time_total"
        )
        table = prof.key_averages().table(sort_by=sort, row_limit=60, max_name_column_width=80)
        (self.out_dir / f"rank{rank}-ops.txt").write_text(table)
        busy, summed = device_seconds(prof.events())
        summary = {
            "steps": [self._first_step, self._first_step + steps],
            "wall_s_per_step": wall / steps,
            "device_busy_s_per_step": busy / steps,
            "device_summed_s_per_step": summed / steps,
            "device_busy": busy / wall if wall > 0 else 0.0,
        }
        (self.out_dir / f"rank{rank}-summary.json").write_text(json.dumps(summary, indent=1))
        log.info(
            "profiled steps %d-%d on rank %d: %.1f ms per step, device busy %.0f%%; see %s",
            *summary["steps"],
            rank,
            1e3 * summary["wall_s_per_step"],
            100 * summary["device_busy"],
            self.out_dir,
        )
