"""Run by tests/test_pretrain_launchers.py: one validation of a freshly seeded MAE over the
validation shards (one process, or every rank under torchrun); rank 0 writes the logged losses."""

import json
import sys
from pathlib import Path

import lightning as L

from maestro.config import load_config
from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import build_trainer
from pretrain.config import PretrainConfig
from pretrain.module import MaestroPretrainModule

config = load_config(PretrainConfig, sys.argv[1], sys.argv[2:])
L.seed_everything(config.trainer.seed)
module = MaestroPretrainModule(config)
data = ShardDataModule(config.data, preprocess_for(config.model.encoder.specs), seed=config.trainer.seed)
trainer = build_trainer(config)
trainer.validate(module, datamodule=data, verbose=False)
if trainer.is_global_zero:
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    (Path(config.trainer.output_dir) / "val.json").write_text(json.dumps(losses))
