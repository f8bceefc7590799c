"""``gapfill``: teach a pretrained MAESTRO MAE to restore cloudy Sentinel-2 dates, then score it.

    gapfill --config configs/gapfill/toy.yaml               # the example's scale (a few minutes on CPU)
    gapfill --init runs/pretrain data.train=/data/shards data.val=/data/shards data.test=/data/shards
    gapfill --eval-only --output-dir example/runs/gapfill   # score a trained run again

Hides a share of each sample's clear dates (and all its cloudy ones), restores them from the other
dates and sensors, and keeps the checkpoint with the lowest validation error. The test scores the
model and two baselines (linear interpolation in time, nearest clear date) on held-out clear dates:
``{run}/test/metrics.json``, ``scores.md`` and figures. Map a zone with ``predict --reconstruct``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gapfill.config import GapFillRunConfig
from maestro.errors import ConfigError
from maestro.training.cli import run_cli, stage_parser

if TYPE_CHECKING:
    import lightning as L


def run(
    config: GapFillRunConfig,
    resume: str | None = None,
    eval_only: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Fit (or reuse a trained run with ``eval_only``), then test its best checkpoint."""
    # torch and Lightning load once the config has been checked, for a fast --help and refusal
    from gapfill import stage

    return stage.run(config, resume=resume, eval_only=eval_only, callbacks=callbacks)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "gapfill",
        __doc__,
        config_required=False,
        epilog="Overrides are dotted keys, e.g. trainer.max_epochs=5 model.held_out_fraction=0.5",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--init", help="the pretraining run (or checkpoint, MAE folder, hf:org/name) to start from"
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="score the best checkpoint of a trained run (--output-dir)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parsed: list[argparse.Namespace] = []

    def flags(args: argparse.Namespace) -> list[str]:
        parsed.append(args)
        return [f"model.init={args.init}"] if args.init is not None else []

    def _run(config: GapFillRunConfig, resume: str | None) -> dict[str, Any]:
        if parsed[-1].eval_only and resume is not None:
            raise ConfigError("--eval-only scores a trained run; it does not take --resume or --resume-from")
        return run(config, resume=resume, eval_only=parsed[-1].eval_only)

    return run_cli(parser, GapFillRunConfig, _run, argv, extra_overrides=flags)


if __name__ == "__main__":
    sys.exit(main())
