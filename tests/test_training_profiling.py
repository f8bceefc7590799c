"""The step profiler records exactly the asked optimizer steps of a real fit and writes its files."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.autograd import DeviceType
from torch.utils.data import DataLoader, TensorDataset

from maestro.errors import ConfigError
from maestro.training.config import TrainerConfig
from maestro.training.profiling import StepProfiler, covered_length, device_seconds


class _Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.steps_seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.steps_seen.append(self.global_step)
        with torch.profiler.record_function("toy_step"):
            return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, profiler: StepProfiler, batches: int) -> None:
    data = DataLoader(TensorDataset(torch.randn(batches * 2, 3)), batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[profiler],
        default_root_dir=tmp_path,
    )
    trainer.fit(_Linear(), data)


def test_profiles_the_asked_steps_and_writes_trace_table_and_summary(tmp_path):
    out = tmp_path / "profile"
    _fit(tmp_path, StepProfiler(2, 5, out), batches=8)
    summary = json.loads((out / "rank0-summary.json").read_text())
    assert summary["steps"] == [2, 5]
    assert summary["wall_s_per_step"] > 0 and summary["device_busy"] == 0.0  # CPU: no device events
    with gzip.open(out / "rank0-trace.json.gz", "rt") as f:
        trace = json.load(f)
    steps_traced = [e for e in trace["traceEvents"] if e.get("name") == "toy_step"]
    assert len(steps_traced) == 3  # steps 2, 3 and 4 only
    assert "toy_step" in (out / "rank0-ops.txt").read_text()


def test_a_run_ending_inside_the_window_keeps_what_was_recorded(tmp_path):
    out = tmp_path / "profile"
    _fit(tmp_path, StepProfiler(1, 100, out), batches=4)
    assert json.loads((out / "rank0-summary.json").read_text())["steps"] == [1, 4]


def test_a_run_resumed_past_the_window_records_nothing(tmp_path):
    profiler = StepProfiler(2, 5, tmp_path / "profile")
    resumed = SimpleNamespace(global_step=7)
    profiler.on_train_batch_start(resumed, None, None, 0)
    profiler.on_train_end(resumed, None)
    assert not (tmp_path / "profile").exists()


def test_covered_length_counts_overlaps_once():
    assert covered_length([]) == 0.0
    assert covered_length([(5.0, 6.0), (0.0, 2.0), (1.0, 3.0), (1.5, 2.5)]) == pytest.approx(4.0)


def test_device_time_counts_kernels_and_copies_not_annotations():
    def event(start: float, end: float, device: DeviceType, annotation: bool = False) -> SimpleNamespace:
        return SimpleNamespace(
            time_range=SimpleNamespace(start=start, end=end),
            device_type=device,
            is_user_annotation=annotation,
        )

    events = [
        event(0, 1_000_000, DeviceType.CUDA, annotation=True),  # a record_function range on the GPU
        event(0, 300_000, DeviceType.CUDA),  # a kernel
        event(200_000, 400_000, DeviceType.CUDA),  # a copy on another stream, overlapping it
        event(0, 900_000, DeviceType.CPU),  # host work
    ]
    busy, summed = device_seconds(events)
    assert busy == pytest.approx(0.4) and summed == pytest.approx(0.5)


def test_bad_windows_fail_at_config_time():
    with pytest.raises(ConfigError, match="profile_steps"):
        TrainerConfig(profile_steps=(5, 5))
    with pytest.raises(ValueError, match="start < stop"):
        StepProfiler(-1, 3, "unused")
