"""Run by torchrun in tests/test_training_fp8.py: tests/pretrain_ddp_worker.py with the FP8 hardware
check bypassed, so each CPU rank trains real torchao float8 layers under DDP (gloo)."""

import logging
import runpy
from pathlib import Path

from maestro.training import fp8

fp8.check_supported = lambda trainer: None  # as on an FP8 GPU; the conversion itself is real
logging.basicConfig(level=logging.INFO)  # each rank logs the layers it converts
runpy.run_path(str(Path(__file__).with_name("pretrain_ddp_worker.py")), run_name="__main__")
