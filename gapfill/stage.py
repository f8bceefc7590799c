"""The cloud-removal run itself: resolve the pretrained MAE, fit, test the best checkpoint.

:mod:`gapfill.cli` parses the command line and checks the config before importing this module.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from gapfill.config import GapFillRunConfig
from gapfill.module import GapFillTask
from gapfill.outputs import TestOutputs
from maestro.errors import ConfigError
from maestro.evaluation.gapfill import GapFillScores
from maestro.models import zoo
from maestro.models.registry import MAESTRO_MAE
from maestro.training.checkpoints import trained_checkpoint
from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import build_trainer, fit_for_best, run_test

log = logging.getLogger("gapfill")


def resolve(config: GapFillRunConfig, load_weights: bool = True) -> tuple[GapFillRunConfig, dict | None]:
    """Fill ``model.mae`` from ``model.init`` and return the MAE weights a fresh run starts from."""
    model = config.model
    if not load_weights and model.mae is not None:
        return config, None
    weights = zoo.load_weights(model.init, MAESTRO_MAE, "ema", user="model.init")
    if model.mae is not None and model.mae != weights.config:
        raise ConfigError(
            f"model.mae does not match the masked autoencoder of {model.init}; drop model.mae to take it "
            "from the init weights"
        )
    log.info("starting from %s", weights.note)
    resolved = dataclasses.replace(config, model=dataclasses.replace(model, mae=weights.config))
    return resolved, weights.state if load_weights else None


def datamodule(config: GapFillRunConfig) -> ShardDataModule:
    """Shards -> batches with every input of the MAE and the target's per-pixel cloud flags. Dates
    are drawn without cloud avoidance: training sees cloudy dates as the model meets them in use."""
    network = config.model.network()
    preprocess = preprocess_for(
        network.mae.encoder.specs,
        keep_flags=(network.target,),
        cloud_avoidance=False,
        cloud_threshold=network.cloud_threshold,
    )
    return ShardDataModule(config.data, preprocess, seed=config.trainer.seed)


def test(
    config: GapFillRunConfig, task: GapFillTask, trainer: L.Trainer, ckpt: Path | None
) -> dict[str, GapFillScores]:
    """Score ``ckpt`` (or the task's weights) and both baselines on held-out dates of ``data.test``."""
    if config.data.test is None:
        raise ConfigError("data.test is not set: there is no test split to evaluate")
    task.test_writer = TestOutputs(Path(config.trainer.output_dir) / "test", config, task.model.config)
    run_test(trainer, task, datamodule(config), ckpt)
    return task.test_scores


def run(
    config: GapFillRunConfig,
    resume: str | None = None,
    eval_only: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Fit (or, with ``eval_only``, reuse a trained run), then test its best checkpoint."""
    config, state = resolve(config, load_weights=resume is None and not eval_only)
    out = Path(config.trainer.output_dir)
    if eval_only:
        return test(config, GapFillTask(config), build_trainer(config, callbacks), trained_checkpoint(out))
    trainer, ckpt = fit_for_best(
        config,
        functools.partial(GapFillTask, mae_state=state),
        datamodule(config),
        "val/loss",
        "min",
        callbacks,
        resume,
    )
    return test(config, trainer.lightning_module, trainer, ckpt)
