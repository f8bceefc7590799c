"""The cloud-removal task: restore held-out clear pixels of the target series, L1 in absolute units.

Built on :class:`~maestro.training.task.TrainingTask` (EMA, optimiser, exact resume). Each step
hides clear pixels of a share of every sample's clear dates, whole dates or cloud-like rectangles
(:func:`~maestro.models.gapfill.hold_out`), besides its cloudy pixels as in use, and pays for the
error on the clear pixels it hid: cloudy pixels never serve as targets. Validation scores the
EMA weights on held-out dates drawn from each patch id, so the value does not depend on batching.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from torchmetrics import SumMetric

from gapfill.config import GapFillRunConfig
from maestro.evaluation.gapfill import GapFillMetrics, nearest_clear
from maestro.hub.folder import load_strict
from maestro.models.gapfill import (
    MaestroGapFill,
    day_numbers,
    fill_series,
    hold_out,
    to_reflectance,
)
from maestro.sample import FLAGS
from maestro.training.task import TrainingTask, batch_size_of
from pretrain.module import sample_keys, step_generator

METHODS = ("model", "linear interpolation", "nearest clear date")
"""What the test scores, on the same held-out pixels."""


def held_out_error(filled: Any, truth: Tensor, held_out: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of |restored - truth| over every band of the held-out pixels, value count)."""
    pixels = rearrange(held_out, "b t h w -> b t 1 h w").expand_as(truth)
    error = torch.where(pixels, (filled.prediction - truth.float()).abs(), 0.0)
    return error.sum(), pixels.sum()


def patch_generator(batch: dict[str, Any], seed: int, index: int, device: torch.device) -> torch.Generator:
    """Held-out dates of evaluation drawn from the batch's patch ids (else its index): the same
    dates whatever the batch size, order or number of ranks."""
    keys = sample_keys(batch)
    text = ",".join(keys) if keys is not None else str(index)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + int.from_bytes(text.encode()[-7:].rjust(7, b"\0"), "big"))
    return generator


class GapFillTask(TrainingTask):
    """Masked-date restoration of the target series; validation: mean absolute error of held-out dates."""

    config_class = GapFillRunConfig
    config: GapFillRunConfig
    model: MaestroGapFill

    def __init__(self, config: GapFillRunConfig | dict[str, Any], mae_state: dict[str, Tensor] | None = None):
        super().__init__(config)
        if mae_state is not None:  # a fresh run: the pretrained MAE (the correction head starts at 0)
            load_strict(self.model.mae, mae_state, self.config.model.init)
        self.val_error = SumMetric()
        self.val_count = SumMetric()
        bands = self.model.mae.specs[self.config.model.target].bands
        self.test_metrics = torch.nn.ModuleDict({name: GapFillMetrics(len(bands), bands) for name in METHODS})
        self.test_writer: Any = None
        """Set by the stage before testing (:class:`gapfill.outputs.TestOutputs`)."""

    def build_model(self) -> MaestroGapFill:
        return MaestroGapFill(self.config.model.network())

    def _restore(
        self, batch: dict[str, Any], model: torch.nn.Module, generator: torch.Generator, fraction: float
    ) -> tuple[Tensor, Tensor]:
        key = self.config.model.target
        valid, flags = batch["valid"][key], batch[FLAGS][key]
        held_out = hold_out(valid, flags, fraction, generator)
        filled = fill_series(model, batch["inputs"], batch["times"], batch["valid"], flags, held_out)
        return held_out_error(filled, batch["inputs"][key], held_out)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        generator = step_generator(self.config.trainer.seed, self.global_step, self.global_rank, self.device)
        error, count = self._restore(batch, self.model, generator, self.config.model.held_out_fraction)
        loss = error / count.clamp(min=1)
        self.log("train/loss", loss, batch_size=batch_size_of(batch))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generator = patch_generator(batch, self.config.trainer.seed + 1, batch_idx, self.device)
        error, count = self._restore(batch, self.eval_model, generator, self.config.eval.held_out_fraction)
        self.val_error.update(error.detach().double())
        self.val_count.update(count.double())

    def on_test_start(self) -> None:
        self.ensure_ema()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Held-out clear pixels restored by the model and by the two temporal baselines, scored in
        reflectance on the same pixels."""
        key = self.config.model.target
        generator = patch_generator(batch, self.config.trainer.seed + 2, batch_idx, self.device)
        valid, flags = batch["valid"][key], batch[FLAGS][key]
        held_out = hold_out(valid, flags, self.config.eval.held_out_fraction, generator)
        filled = fill_series(
            self.eval_model, batch["inputs"], batch["times"], batch["valid"], flags, held_out
        )
        truth = batch["inputs"][key].float()
        days = day_numbers(batch["times"][key])
        scale = to_reflectance(key)
        mask = held_out
        for name, values in (
            ("model", filled.prediction),
            ("linear interpolation", filled.prior),
            ("nearest clear date", nearest_clear(truth, days, filled.trusted)),
        ):
            self.test_metrics[name].update(values * scale, truth * scale, mask)
        if self.test_writer is not None:
            self.test_writer.add_batch(batch, filled, held_out, self.global_rank)

    def on_test_epoch_end(self) -> None:
        self.test_scores = {name: metric.compute() for name, metric in self.test_metrics.items()}
        for metric in self.test_metrics.values():
            metric.reset()
        self.log("test/rmse", self.test_scores["model"].rmse, sync_dist=False, rank_zero_only=False)
        if self.test_writer is not None and self.trainer.is_global_zero:
            self.test_writer.finish(self.test_scores)

    def on_validation_epoch_end(self) -> None:
        error, count = self.val_error.compute(), self.val_count.compute()
        self.val_error.reset()
        self.val_count.reset()
        if count > 0:
            self.log("val/loss", (error / count).float(), prog_bar=True, sync_dist=False)
