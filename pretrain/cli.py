"""``pretrain``: MAESTRO masked-autoencoder pretraining from shards, one CPU to many GPU nodes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import lightning as L

from maestro.training.cli import run_cli, stage_parser
from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import run_stage
from pretrain.callbacks import ReconstructionImages
from pretrain.config import PretrainConfig
from pretrain.module import MaestroPretrainModule


def run(config: PretrainConfig, resume: str | None = None, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """Train; ``resume`` is a checkpoint path, or ``"last"`` for the run's newest checkpoint."""
    data = ShardDataModule(config.data, preprocess_for(config.model.encoder.specs), seed=config.trainer.seed)
    if config.trainer.reconstruction_every_n_steps > 0:
        callbacks = [ReconstructionImages(config.trainer.output_dir), *callbacks]
    return run_stage(config, MaestroPretrainModule, data, callbacks, resume=resume)


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
