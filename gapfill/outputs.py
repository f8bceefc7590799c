"""What the test of a cloud-removal run writes: scores of the model and the baselines, and figures.

``{run}/test/metrics.json`` (every method's scores, in reflectance), ``scores.md`` (the table) and,
for the first ``eval.num_figures`` test samples, ``restored_{i}.png`` (dates with clouds, restored,
truth) and ``ndvi_{i}.png`` (NDVI over the year of a few pixels, restored dates marked).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from gapfill.config import GapFillRunConfig
from maestro.data.preprocess import dates_of_times
from maestro.evaluation.gapfill import GapFillScores, scores_table
from maestro.evaluation.gapfill_figures import gapfill_figure, ndvi_figure
from maestro.models.gapfill import FilledSeries, to_reflectance
from maestro.models.gapfill_config import GapFillConfig
from maestro.sample import FLAGS

log = logging.getLogger("gapfill")


@dataclass(frozen=True)
class _Drawn:
    """One test sample kept for the figures, in reflectance, valid dates only."""

    inputs: Tensor
    restored: Tensor
    truth: Tensor
    held_out: Tensor
    """(T, H, W) pixels hidden and restored for the score."""
    cloudy: Tensor
    dates: np.ndarray
    """(T,) YYYYMMDD."""


class TestOutputs:
    """Collects figure samples on rank 0 during the test, writes everything at its end."""

    __test__ = False  # not a pytest class

    def __init__(self, out_dir: Path, config: GapFillRunConfig, network: GapFillConfig):
        self.out_dir = Path(out_dir)
        self.num_figures = config.eval.num_figures
        self.target = network.target
        self.drawn: list[_Drawn] = []

    def add_batch(self, batch: dict[str, Any], filled: FilledSeries, held_out: Tensor, rank: int) -> None:
        if rank != 0 or len(self.drawn) >= self.num_figures:
            return
        key, scale = self.target, to_reflectance(self.target)
        valid = batch["valid"][key]
        flags = batch[FLAGS][key]
        for index in range(valid.shape[0]):
            if len(self.drawn) >= self.num_figures:
                break
            keep = valid[index].cpu()
            inputs = (batch["inputs"][key][index].float() * scale).cpu()[keep]
            times = batch["times"][key][index].cpu().numpy()
            dates = dates_of_times(times, batch["meta"][index]["reference_date"], keep.numpy())
            self.drawn.append(
                _Drawn(
                    inputs=inputs,
                    restored=(filled.series[index] * scale).cpu()[keep],
                    truth=inputs,
                    held_out=held_out[index].cpu()[keep],
                    cloudy=flags[index].cpu()[keep] & ~held_out[index].cpu()[keep],
                    dates=dates[keep.numpy()],
                )
            )

    def finish(self, scores: dict[str, GapFillScores]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.out_dir / "metrics.json"
        metrics.write_text(json.dumps({name: s.to_dict() for name, s in scores.items()}, indent=2) + "\n")
        table = scores_table(scores)
        (self.out_dir / "scores.md").write_text(
            "Held-out clear dates of the test split, restored; reflectance units (DN / 10000).\n\n" + table
        )
        log.info("test scores on held-out dates:\n%s", table)
        for index, drawn in enumerate(self.drawn):
            whole = drawn.held_out.flatten(1).all(1)  # held-out dates; partly held-out pixels are outlined
            outlined = drawn.cloudy | (drawn.held_out & ~whole[:, None, None])
            gapfill_figure(
                drawn.inputs,
                drawn.restored,
                drawn.truth,
                whole,
                outlined,
                drawn.dates,
                self.out_dir / f"restored_{index}.png",
            )
            replaced = drawn.cloudy | drawn.held_out
            height, width = replaced.shape[1:]
            pixels = [(height // 4, width // 4), (height // 2, width // 2), (3 * height // 4, 3 * width // 4)]
            ndvi_figure(
                {"input": drawn.inputs, "restored": drawn.restored},
                drawn.dates,
                pixels,
                replaced,
                self.out_dir / f"ndvi_{index}.png",
            )
        log.info("scores and figures in %s", self.out_dir)
