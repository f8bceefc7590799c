"""``pretrain``: MAESTRO masked-autoencoder pretraining from shards, one CPU to many GPU nodes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from maestro.training.cli import run_cli, stage_parser
from pretrain.config import PretrainConfig

if TYPE_CHECKING:
    import lightning as L


def run(config: PretrainConfig, resume: str | None = None, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Train; ``resume`` is a checkpoint path, or ``"last"`` for the run's newest checkpoint."""
    # torch and Lightning load once the config has been checked, for a fast --help and refusal
    from pretrain import stage

    return stage.run(config, resume, callbacks)


def build_parser() -> argparse.ArgumentParser:
    return stage_parser(
        "pretrain",
        __doc__,
        epilog="Overrides are dotted keys, e.g. trainer.max_steps=200 model.encoder.size=small data.batch_size=16",
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), PretrainConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
