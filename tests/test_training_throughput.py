"""The throughput callback logs samples/s and step time per window, without validation time."""

from __future__ import annotations

import csv
import logging
import re
import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from maestro.training import throughput
from maestro.training.throughput import (
    INPUT_WAIT,
    INPUT_WAIT_MAX,
    PEAK_MEMORY,
    SAMPLES_PER_SEC,
    STEP_SECONDS,
    TrainingEta,
    TrainingThroughput,
    duration,
    samples_in,
)


class _Linear(L.LightningModule):
    """A model-sample-shaped batch (``inputs`` by modality) through one linear layer; validation
    sleeps, so counting it as training time would show."""

    def __init__(self, validation_seconds: float, step_seconds: float = 0.0):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.validation_seconds = validation_seconds
        self.step_seconds = step_seconds

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_seconds)
        return self.layer(batch["inputs"]["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        time.sleep(self.validation_seconds)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SlowBatches(torch.utils.data.Dataset):
    """Batches that take ``seconds`` each to load."""

    def __init__(self, batches: int, batch_size: int, seconds: float):
        self.batches, self.batch_size, self.seconds = batches, batch_size, seconds

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.seconds)
        return {"inputs": {"x": torch.ones(self.batch_size, 3)}}


def _loader(batches: int, batch_size: int, load_seconds: float = 0.0) -> DataLoader:
    return DataLoader(_SlowBatches(batches, batch_size, load_seconds), batch_size=None)


def _fit(tmp_path, model: L.LightningModule, train: DataLoader, val: DataLoader | None = None) -> list[dict]:
    """Fit with the callback alone (window 2) and return the CSV rows that carry throughput."""
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[TrainingThroughput(every_n_steps=2)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(model, train, val)
    with open(next(tmp_path.glob("csv/version_*/metrics.csv"))) as f:
        return [r for r in csv.DictReader(f) if r[SAMPLES_PER_SEC]]


def test_samples_per_second_is_logged_every_window_without_validation_time(tmp_path):
    rows = _fit(tmp_path, _Linear(validation_seconds=1.0), _loader(4, batch_size=5), _loader(1, batch_size=5))
    logged = {int(r["step"]): (float(r[SAMPLES_PER_SEC]), float(r[STEP_SECONDS])) for r in rows}
    assert sorted(logged) == [2, 4, 6, 8]  # 4 steps per epoch, a window of 2 steps
    for rate, seconds in logged.values():
        assert rate == pytest.approx(5 / seconds)  # 2 steps x 5 samples over 2 steps' time
    # the window after the first validation (steps 5-6) does not include its 1 s sleep
    assert logged[6][1] < 0.5
    assert INPUT_WAIT_MAX not in rows[0]  # one process: nothing to reduce over ranks


def test_input_wait_is_high_when_loading_sets_the_pace_and_low_when_the_step_does(tmp_path):
    slow_input = _fit(tmp_path / "input", _Linear(0.0), _loader(4, batch_size=5, load_seconds=0.2))
    slow_step = _fit(tmp_path / "step", _Linear(0.0, step_seconds=0.2), _loader(4, batch_size=5))
    assert len(slow_input) == len(slow_step) == 4
    assert all(float(r[INPUT_WAIT]) > 0.6 for r in slow_input), [r[INPUT_WAIT] for r in slow_input]
    assert all(float(r[INPUT_WAIT]) < 0.4 for r in slow_step), [r[INPUT_WAIT] for r in slow_step]


class _Logged:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append(metrics)


def _window_end(
    callback: TrainingThroughput, step: int, device: str, waited: float, logger: _Logged | None = None
) -> None:
    """Drive one window end by hand: a trainer at ``step`` on ``device`` whose window spent
    ``waited`` of its time on input."""
    trainer = SimpleNamespace(
        global_step=step,
        strategy=SimpleNamespace(root_device=torch.device(device)),
        is_global_zero=True,
        world_size=1,
        loggers=[logger] if logger is not None else [],
    )
    callback._start, callback._start_step = time.perf_counter() - 1.0, step - callback.every_n_steps
    callback._waited = waited
    callback.on_train_batch_end(trainer, None, None, (torch.zeros(2, 1),), 0)


def _no_gpu_here(monkeypatch) -> None:
    monkeypatch.setattr(throughput, "sync_device", lambda trainer: None)
    monkeypatch.setattr(throughput, "peak_memory_gib", lambda device: 12.5 if device.type == "cuda" else None)


def test_an_input_bound_gpu_run_warns_once_past_the_first_window(monkeypatch, caplog):
    _no_gpu_here(monkeypatch)
    callback = TrainingThroughput(every_n_steps=10)
    with caplog.at_level(logging.WARNING, logger="maestro.training.throughput"):
        _window_end(callback, 10, "cuda", waited=0.9)  # first window: start-up, not counted
        _window_end(callback, 20, "cuda", waited=0.1)  # the GPU sets the pace
        _window_end(callback, 20, "cpu", waited=0.9)  # CPU runs share cores with the loader
        assert not caplog.records
        _window_end(callback, 30, "cuda", waited=0.5)
        _window_end(callback, 40, "cuda", waited=0.5)
    assert len(caplog.records) == 1
    assert "waited for input 50% of the last 10 steps" in caplog.text
    assert "data.num_workers" in caplog.text


def test_gpu_runs_log_their_peak_memory(monkeypatch):
    _no_gpu_here(monkeypatch)
    gpu, cpu = _Logged(), _Logged()
    _window_end(TrainingThroughput(every_n_steps=10), 10, "cuda", waited=0.1, logger=gpu)
    _window_end(TrainingThroughput(every_n_steps=10), 10, "cpu", waited=0.1, logger=cpu)
    assert gpu.metrics[0][PEAK_MEMORY] == 12.5 and PEAK_MEMORY not in cpu.metrics[0]


def test_a_window_must_hold_a_step():
    with pytest.raises(ValueError, match="every_n_steps"):
        TrainingThroughput(every_n_steps=0)


def test_samples_are_counted_in_model_batches_and_plain_tuples():
    model_batch = {"inputs": {"aerial": torch.zeros(3, 1, 4, 8, 8)}, "times": {}, "meta": [{}] * 3}
    assert samples_in(model_batch) == 3
    assert samples_in((torch.zeros(5, 2), torch.zeros(5))) == 5


def test_a_run_logs_its_planned_steps_and_an_eta_after_its_first_steps(tmp_path, caplog):
    """Step 1 (start-up) is not timed; steps 2-5 are, across the first epoch's validation, whose
    1 s sleep is left out of the pace; the ETA is logged once."""
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        callbacks=[TrainingEta(after_steps=4)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    with caplog.at_level(logging.INFO, logger="maestro.training.throughput"):
        trainer.fit(_Linear(validation_seconds=1.0, step_seconds=0.05), _loader(4, 5), _loader(1, 5))
    messages = [r.getMessage() for r in caplog.records if r.name == "maestro.training.throughput"]
    assert messages[0] == "planned: 8 optimizer steps (2 epochs of 4 batches)", messages
    [eta] = [m for m in messages if "ETA" in m]
    match = re.match(r"step 5 of 8: (\S+) s per optimizer step, about (\d+) s of training left", eta)
    assert match, eta
    assert 0.05 <= float(match.group(1)) < 0.5 and int(match.group(2)) < 2, eta


def test_durations_read_at_an_eta_precision():
    assert [duration(s) for s in (12.4, 250, 7500)] == ["12 s", "4 min 10 s", "2 h 05 min"]
