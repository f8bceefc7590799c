"""Where a fine-tuning run lives, and the config an ``--eval-only`` test uses: from configs alone.

Both the command (before anything heavy loads) and the stage (:mod:`finetune.stage`) read these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.config import FinetuneConfig, FinetuneTrainerConfig, ModelConfig
from maestro.config import load_config, to_dict
from maestro.errors import ConfigError

log = logging.getLogger("finetune")
EVAL_OVERRIDES = (
    "data",
    "eval",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
)
"""Overrides an ``--eval-only`` run applies to the tested run's own config: where the test data
is, what the test writes and on which devices it runs."""


def run_dir(config: FinetuneConfig) -> Path:
    """Where the run of ``config`` lives: ``trainer.output_dir``, or by default one folder per
    task, level and kind of model, so that runs of different kinds never refuse each other."""
    out = Path(config.trainer.output_dir)
    if out != FinetuneTrainerConfig.output_dir:
        return out
    model = config.model
    name = f"{config.task.name}-level{config.task.level}"
    if model.is_baseline:
        return out / f"{name}-{model.architecture}"
    name += "-probe" if model.probe else ""
    usual = "linear" if model.probe else ModelConfig.head  # --probe trains the linear head
    name += f"-{model.head}-head" if model.head != usual else ""
    return out / name


def _sections(config: FinetuneConfig) -> dict[str, Any]:
    """``section.key`` -> value, the granularity at which a tested config is compared."""
    return {f"{name}.{key}": value for name, part in to_dict(config).items() for key, value in part.items()}


def _applies_to_a_test(override: str) -> bool:
    key = override.partition("=")[0].strip()
    return key in EVAL_OVERRIDES or key.split(".")[0] in EVAL_OVERRIDES


def trained_run_config(config: FinetuneConfig, overrides: Sequence[str]) -> FinetuneConfig:
    """What ``--eval-only`` tests: the ``config.yaml`` of the run ``config`` names (:func:`run_dir`)
    with only the user's :data:`EVAL_OVERRIDES`. A task or model the run was not trained with is
    refused (it names another run); other training keys are ignored, with a warning."""
    folder = run_dir(config)
    saved = folder / "config.yaml"
    if not saved.is_file():
        log.info("%s has no config.yaml: testing it with the configuration as given", folder)
        return config
    kept = [o for o in overrides if _applies_to_a_test(o)]
    placed = [f"trainer.output_dir={json.dumps(str(folder))}"]  # the run may have been moved or copied
    tested = load_config(FinetuneConfig, saved, [*kept, *placed])
    given = _sections(load_config(FinetuneConfig, saved, [*overrides, *placed]))
    own = _sections(tested)
    changed = [key for key in given if given[key] != own[key]]
    fixed = [key for key in changed if key.startswith(("task.", "model."))]
    if fixed:
        differences = ", ".join(f"{key}={given[key]} (the run's: {own[key]})" for key in fixed)
        raise ConfigError(
            f"--eval-only tests the run in {folder} as it was trained ({saved}), and it was not trained "
            f"with {differences}. Drop those, or name the run to test with --output-dir"
        )
    if changed:
        log.warning("--eval-only keeps the run's own %s (only data, eval and device settings apply)", changed)
    log.info("testing the run in %s with its own configuration (%s)", folder, saved)
    return tested
