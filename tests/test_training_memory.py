"""The host-memory estimate a CPU run logs before it starts, and the batch size it names when a
step will not fit."""

from __future__ import annotations

import dataclasses
import logging
import re

import lightning as L
import pytest

from finetune.cli import run
from finetune.config import FinetuneConfig
from finetune.module import FinetuneTask
from finetune.stage import resolve
from maestro.config import load_config
from maestro.training import memory
from maestro.training.config import DataConfig
from maestro.training.memory import StepMemory

MEASURED_SMALL_STEP_MIB = 989
"""Peak resident memory per sample of one fp32 training step on CPU (forward and backward, batches
of 2 and 4) of the README's ``--init random model.encoder.size=small`` model: the 5 default inputs,
UPerNet with 256 channels, land cover."""


@pytest.fixture(scope="module")
def small_task() -> FinetuneTask:
    overrides = ["model.init=random", "model.encoder.size=small", "trainer.accelerator=cpu"]
    config, _ = resolve(load_config(FinetuneConfig, None, overrides))
    return FinetuneTask(config)


def test_the_readme_small_model_costs_about_what_was_measured(small_task):
    sample = small_task.sample_memory()
    per_sample = (sample.activations + sample.inputs) / 2**20
    assert MEASURED_SMALL_STEP_MIB <= per_sample <= 1.2 * MEASURED_SMALL_STEP_MIB


def test_batch_32_on_a_24_gb_machine_is_told_the_batch_size_that_fits(small_task, toy_shards, caplog):
    """The README line that the kernel killed at 21 GB: the default batch of 32 at 512 px."""
    data = DataConfig(train=str(toy_shards), batch_size=32, num_workers=4)
    step = memory.step_memory(small_task.model, small_task.sample_memory(), data)
    assert 30e9 < step.total < 50e9
    with caplog.at_level(logging.INFO, logger="maestro.training.memory"):
        memory.report(step, available=21 * 10**9)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "a training step at data.batch_size=32 needs roughly" in warning
    fits = int(re.search(r"Set data.batch_size=(\d+)", warning).group(1))
    assert 8 <= fits < 32
    assert step.largest_batch(21 * 10**9) == fits
    sample = small_task.sample_memory()
    at = {
        b: memory.step_memory(small_task.model, sample, dataclasses.replace(data, batch_size=b))
        for b in (fits, fits + 1)
    }
    assert at[fits].total <= 21 * 10**9 < at[fits + 1].total


def test_a_step_that_fits_is_only_reported_and_one_that_never_fits_names_other_settings(caplog):
    step = StepMemory(per_sample=10**9, fixed=2 * 10**9, loader=10**9, loader_per_sample=0, batch_size=4)
    with caplog.at_level(logging.INFO, logger="maestro.training.memory"):
        memory.report(step, available=8 * 10**9)
        assert [r.levelno for r in caplog.records] == [logging.INFO]
        assert "needs roughly 7.0 GB" in caplog.text and "8.0 GB available" in caplog.text
        memory.report(step, available=2 * 10**9)
    assert "data.num_workers" in caplog.records[-1].getMessage()
    assert memory.available_memory() is None or memory.available_memory() > 0


class _Reached(Exception):
    pass


def test_a_cpu_fine_tuning_run_reports_its_step_memory_before_training(
    finetune_config, tmp_path, monkeypatch, caplog
):
    def reached(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr(L.Trainer, "fit", reached)
    caplog.set_level(logging.INFO)
    with pytest.raises(_Reached):
        run(finetune_config(tmp_path / "run"))
    [line] = [r.getMessage() for r in caplog.records if r.name == "maestro.training.memory"]
    assert line.startswith("a training step at data.batch_size=2 needs roughly") and "available" in line
