"""The throughput callback logs samples/s and step time per window, without validation time."""

from __future__ import annotations

import csv
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from maestro.training.throughput import SAMPLES_PER_SEC, STEP_SECONDS, TrainingThroughput, samples_in


class _Linear(L.LightningModule):
    """A model-sample-shaped batch (``inputs`` by modality) through one linear layer; validation
    sleeps, so counting it as training time would show."""

    def __init__(self, validation_seconds: float):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.validation_seconds = validation_seconds

    def training_step(self, batch, batch_idx):
        return self.layer(batch["inputs"]["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        time.sleep(self.validation_seconds)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(batches: int, batch_size: int) -> DataLoader:
    return DataLoader([{"inputs": {"x": torch.ones(batch_size, 3)}}] * batches, batch_size=None)


def test_samples_per_second_is_logged_every_window_without_validation_time(tmp_path):
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
    trainer.fit(_Linear(validation_seconds=1.0), _loader(4, batch_size=5), _loader(1, batch_size=5))
    with open(next(tmp_path.glob("csv/version_*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    logged = {
        int(r["step"]): (float(r[SAMPLES_PER_SEC]), float(r[STEP_SECONDS]))
        for r in rows
        if r[SAMPLES_PER_SEC]
    }
    assert sorted(logged) == [2, 4, 6, 8]  # 4 steps per epoch, a window of 2 steps
    for rate, seconds in logged.values():
        assert rate == pytest.approx(5 / seconds)  # 2 steps x 5 samples over 2 steps' time
    # the window after the first validation (steps 5-6) does not include its 1 s sleep
    assert logged[6][1] < 0.5


def test_a_window_must_hold_a_step():
    with pytest.raises(ValueError, match="every_n_steps"):
        TrainingThroughput(every_n_steps=0)


def test_samples_are_counted_in_model_batches_and_plain_tuples():
    model_batch = {"inputs": {"aerial": torch.zeros(3, 1, 4, 8, 8)}, "times": {}, "meta": [{}] * 3}
    assert samples_in(model_batch) == 3
    assert samples_in((torch.zeros(5, 2), torch.zeros(5))) == 5
