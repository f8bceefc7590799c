"""One run, one log: the TensorBoard and CSV logs of a resumed run continue the interrupted ones.

Lightning's loggers start a new ``version_N`` folder per launch, so a run interrupted twice has
three partial logs, and its CSV logger deletes an existing ``metrics.csv`` when told to reuse a
folder. Here every launch of a run writes to ``version_0`` and drops only what the interrupted
launch logged past the checkpoint the run resumes from (those steps are trained and logged again):
TensorBoard through its ``purge_step``, the CSV by rewriting its rows. A test of a trained run
(``from_step=None``) keeps everything and appends.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

VERSION = 0


def _step(row: dict[str, str]) -> int | None:
    value = row.get("step")
    return int(float(value)) if value not in (None, "") else None


class ContinuedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows of an existing ``metrics.csv`` logged before
    ``from_step`` (all of them when ``from_step`` is None) instead of deleting the file."""

    def __init__(self, log_dir: str, from_step: int | None):
        self.from_step = from_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by __init__, before anything is logged
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows, keys = list(reader), list(reader.fieldnames or [])
        if self.from_step is not None:
            rows = [row for row in rows if (step := _step(row)) is None or step < self.from_step]
        if not rows:
            os.remove(self.metrics_file_path)
            return
        self.metrics_keys = sorted(keys)
        with open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class RunCSVLogger(CSVLogger):
    """``csv/version_0/metrics.csv``, continued by every launch of the run (see the module doc)."""

    def __init__(self, out: Path, from_step: int | None):
        super().__init__(save_dir=out, name="csv", version=VERSION)
        self.from_step = from_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedCSVWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedCSVWriter(self.log_dir, self.from_step)
        return self._experiment


def run_loggers(out: Path, from_step: int | None) -> list[Logger]:
    """TensorBoard and CSV loggers of the run in ``out``; ``from_step`` is the optimizer step the
    launch starts from (0 for a fresh run, the checkpoint's step when resuming), None to append."""
    purge = {} if from_step is None else {"purge_step": from_step}
    return [
        TensorBoardLogger(save_dir=out, name="tensorboard", version=VERSION, **purge),
        RunCSVLogger(out, from_step),
    ]
