"""Run by torchrun in tests/test_pretrain.py: a short DDP pretraining, then each rank dumps its weights."""

import os
import sys
from pathlib import Path

import torch

from maestro.config import load_config
from pretrain.cli import run
from pretrain.config import PretrainConfig

config = load_config(PretrainConfig, sys.argv[1], sys.argv[2:])
trainer = run(config)
module = trainer.lightning_module
weights = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
torch.save(weights, Path(config.trainer.output_dir) / f"weights_rank{os.environ['RANK']}.pt")
