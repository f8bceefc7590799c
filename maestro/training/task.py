"""``TrainingTask``: the LightningModule every stage subclasses (torchgeo style).

The base owns what does not depend on the task: the model and its EMA copy, optimiser and
schedule, the shard loader's position in checkpoints, and the checks that make a resume exact or
refuse it. A stage fills in ``build_model`` and its training and validation steps.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from maestro.config import from_dict, to_dict
from maestro.errors import ConfigError
from maestro.hub.weights import EMA_STATE, HYPER_PARAMETERS, RUN_CONFIG_KEY
from maestro.models.ema import create_ema
from maestro.training.config import FP8, StageConfig
from maestro.training.fp8 import convert_to_fp8
from maestro.training.memory import SampleMemory
from maestro.training.optim import build_optimizer

log = logging.getLogger(__name__)


class TrainingTask(L.LightningModule, ABC):
    """Model + EMA + AdamW/OneCycle + exact resume; subclasses add the task's steps.

    Subclasses set :attr:`config_class` (their stage config dataclass) and implement
    :meth:`build_model`, ``training_step`` and ``validation_step``. Hooks they override
    (``on_fit_start``, ``optimizer_step``, ``on_save_checkpoint``, ...) must call ``super()``.
    """

    config_class: ClassVar[type]
    """The stage config dataclass (data, optim, trainer and the stage's own sections)."""
    model_section: ClassVar[str] = "model"
    """Config section that defines the weights; a resume with another value of it is refused."""

    def __init__(self, config: StageConfig | Mapping[str, Any]):
        super().__init__()
        raw = dict(config) if isinstance(config, Mapping) else to_dict(config)
        # Plain dict hyperparameters: checkpoints stay loadable with weights_only=True. The layout
        # of what is saved (this config, ``model.*`` weights, the EMA copy) is read back by
        # maestro.hub.weights, which names each part.
        self.save_hyperparameters({RUN_CONFIG_KEY: raw})
        self.config = config if not isinstance(config, Mapping) else from_dict(self.config_class, raw)
        self.model = self.build_model()  # its weights are saved as model.* (weights.NETWORK_PREFIX)
        if self.config.trainer.precision == FP8:  # before compiling: the graphs trace the FP8 layers
            convert_to_fp8(self.model, self.config.trainer.fp8_min_features)
        if self.config.trainer.compile:
            self.model.compile()
        # Kept out of the module tree (object.__setattr__) so that DDP/FSDP and the optimizer never
        # see the EMA copy; saved and restored through the checkpoint hooks below.
        object.__setattr__(self, "ema", None)
        self._pending_ema_state: dict[str, torch.Tensor] | None = None
        self._pending_loader_state: dict[str, int] | None = None
        self._resumed_total_steps: int | None = None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The trained network, from ``self.config`` (called once, in ``__init__``)."""

    # ------------------------------------------------------------------ batch size
    def sample_memory(self) -> SampleMemory | None:
        """What one training sample costs in host memory (activations kept for the backward pass
        and the inputs), for the estimate a CPU run logs before it starts
        (:mod:`maestro.training.memory`). None, the default: the stage makes no estimate."""
        return None

    def single_sample_hint(self) -> str:
        """What else than a larger batch lets this stage train on one sample per batch."""
        return ""

    def check_batch_size(self) -> None:
        """Refuse training batches of one sample when a BatchNorm layer trains: it normalises with
        the batch's own statistics, which one sample cannot give wherever a feature map is 1 x 1
        (UPerNet's pooled branch), so the first step would fail. Checked before anything is
        written. Evaluation batches of one (a split's last) use the running statistics and work."""
        if self.config.data.batch_size > 1:
            return
        for name, module in self.model.named_modules():
            trains = any(p.requires_grad for p in module.parameters(recurse=False))
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and trains:
                raise ConfigError(
                    f"data.batch_size=1: model.{name} is a BatchNorm layer, which cannot normalise a "
                    "training batch of one sample (one value per channel where the map is 1 x 1). "
                    "Use data.batch_size=2 or more (trainer.accumulate_grad_batches adds samples per "
                    f"optimizer step without more memory){self.single_sample_hint()}"
                )

    # ------------------------------------------------------------------ EMA
    @property
    def uses_ema(self) -> bool:
        return self.config.trainer.ema_decay > 0 and self.config.trainer.strategy != "fsdp"

    @property
    def eval_model(self) -> nn.Module:
        """The EMA copy when one is kept, else the live model: what validation evaluates."""
        return self.ema.module if self.ema is not None else self.model

    def on_fit_start(self) -> None:
        if self.config.trainer.ema_decay > 0 and self.config.trainer.strategy == "fsdp":
            log.warning("EMA is not kept under FSDP (parameters are sharded); evaluating the live weights")
        self.ensure_ema()

    def ensure_ema(self) -> None:
        """Create the EMA copy if the run keeps one, and give it the weights of a loaded checkpoint.

        Called when fitting starts, and by stages before a test that may come from a checkpoint.
        """
        if self.uses_ema and self.ema is None:
            object.__setattr__(self, "ema", create_ema(self.model, decay=self.config.trainer.ema_decay))
        if self.ema is not None and self._pending_ema_state is not None:
            self.ema.load_state_dict(self._pending_ema_state)
            self._pending_ema_state = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA update. Here rather than in ``on_train_batch_end``:
        Lightning runs callbacks' batch-end hooks (the step checkpoint) before the module's, so a
        checkpoint would hold an EMA one update behind and a resumed run would never make it up.
        Once per optimizer step, also when gradients are accumulated."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step + 1)  # the step counter moves after this hook

    # ------------------------------------------------------------------ loader position
    def on_train_start(self) -> None:
        # Lightning restores stateful loaders only when it builds them after the checkpoint is
        # read, which is not the case here (configure_optimizers builds the loader early to count
        # steps), and it skips on_train_epoch_start when resuming mid-epoch: restore here.
        self._sync_loader()

    def on_train_epoch_start(self) -> None:
        self._sync_loader()

    def _sync_loader(self) -> None:
        """Give the shard loader its epoch (it seeds the stream) and, once, its resumed position."""
        loader = self.trainer.train_dataloader
        if loader is None:
            return
        if self._pending_loader_state is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        elif hasattr(loader, "set_epoch"):
            loader.set_epoch(self.current_epoch)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint[EMA_STATE] = self.ema.state_dict()
        loader = self.trainer.train_dataloader
        if hasattr(loader, "state_dict"):
            checkpoint["train_loader_state"] = loader.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_compatible(checkpoint)
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        self._resumed_total_steps = schedulers[0].get("total_steps")
        self._pending_ema_state = checkpoint.get(EMA_STATE)
        self._pending_loader_state = checkpoint.get("train_loader_state")
        if self.ema is not None:  # already created (e.g. testing the best checkpoint after fitting)
            self.ensure_ema()

    def check_compatible(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained with another :attr:`model_section`: its weights (and its
        EMA) belong to another network. Stages with more such sections extend this."""
        section = self.model_section
        saved = checkpoint.get(HYPER_PARAMETERS, {}).get(RUN_CONFIG_KEY, {}).get(section)
        if saved is None:
            return
        current = getattr(self.config, section)
        try:
            saved_config = from_dict(type(current), saved, where=section)
        except ConfigError as error:
            raise ConfigError(
                f"cannot resume: the checkpoint's {section} config no longer loads ({error}); start a new run"
            ) from None
        if saved_config != current:
            raise ConfigError(
                f"cannot resume: the checkpoint was trained with another {section} config "
                f"({to_dict(saved_config)}); resume with the run's own config.yaml"
            )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self.trainer
        global_batch = self.config.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        total_steps = max(int(trainer.estimated_stepping_batches), 2)
        if self._resumed_total_steps is not None and self._resumed_total_steps != total_steps:
            raise ConfigError(
                f"cannot resume: the checkpoint's learning-rate schedule spans {self._resumed_total_steps} "
                f"optimizer steps but this run would span {total_steps}; keep trainer.max_epochs, "
                "trainer.max_steps, data.batches_per_epoch, the number of devices and "
                "trainer.accumulate_grad_batches as they were (start a new run to train longer)"
            )
        optimizer, scheduler = build_optimizer(self.model, self.config.optim, global_batch, total_steps)
        log.info(
            "global batch %d, peak lr %.3g, %d optimizer steps",
            global_batch,
            self.config.optim.peak_lr(global_batch),
            total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """Samples in a model-sample batch (``inputs`` maps modality -> ``(B, ...)``)."""
    return next(iter(batch["inputs"].values())).shape[0]
