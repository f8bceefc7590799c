"""LightningModule for MAESTRO masked-autoencoder pretraining."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from maestro.config import from_dict, to_dict
from maestro.errors import ConfigError
from maestro.models import MaestroConfig, MaestroMAE, create_ema
from pretrain.config import PretrainConfig

log = logging.getLogger(__name__)


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Mask randomness tied to (seed, step, rank): a resumed run draws the same masks."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return generator


class MaestroPretrainModule(L.LightningModule):
    """Masked reconstruction training step, EMA copy for evaluation, AdamW + OneCycle."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        # Plain dict hyperparameters: checkpoints stay loadable with weights_only=True.
        self.save_hyperparameters({"config": config})
        self.config: PretrainConfig = from_dict(PretrainConfig, config)
        self.model = MaestroMAE(self.config.model_config)
        if self.config.trainer.compile:
            self.model.compile()
        # Kept out of the module tree (object.__setattr__) so that DDP/FSDP and the optimizer never
        # see the EMA copy; saved and restored through the checkpoint hooks below.
        object.__setattr__(self, "ema", None)
        # Accumulated per rank and reduced once per validation: ranks may see different numbers of
        # validation batches (each sample exactly once), so nothing may sync per step.
        self.val_losses = torch.nn.ModuleDict(
            {key: MeanMetric() for key in ("total", *self.config.model_config.modalities)}
        )
        self.last_output: tuple[int, dict[str, Any], dict[str, Any]] | None = None
        """(step, batch, outputs) of the step the reconstruction images are drawn for."""
        self._pending_ema_state: dict[str, torch.Tensor] | None = None
        self._pending_loader_state: dict[str, int] | None = None
        self._resumed_total_steps: int | None = None

    # ------------------------------------------------------------------ EMA
    @property
    def uses_ema(self) -> bool:
        return self.config.trainer.ema_decay > 0 and self.config.trainer.strategy != "fsdp"

    def on_fit_start(self) -> None:
        if self.config.trainer.ema_decay > 0 and self.config.trainer.strategy == "fsdp":
            log.warning("EMA is not kept under FSDP (parameters are sharded); evaluating the live weights")
        if self.uses_ema and self.ema is None:
            object.__setattr__(self, "ema", create_ema(self.model, decay=self.config.trainer.ema_decay))
            if self._pending_ema_state is not None:
                self.ema.load_state_dict(self._pending_ema_state)
                self._pending_ema_state = None

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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict()
        loader = self.trainer.train_dataloader
        if hasattr(loader, "state_dict"):
            checkpoint["train_loader_state"] = loader.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("config", {}).get("model")
        if saved is not None:
            saved_model = MaestroConfig.from_dict(saved)
            if saved_model != self.config.model_config:
                raise ConfigError(
                    "cannot resume: the checkpoint was trained with another model config "
                    f"({to_dict(saved_model)}); resume with the run's own config.yaml"
                )
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        self._resumed_total_steps = schedulers[0].get("total_steps")
        self._pending_ema_state = checkpoint.get("ema_state_dict")
        self._pending_loader_state = checkpoint.get("train_loader_state")

    @property
    def eval_model(self) -> MaestroMAE:
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        return self.model(batch["inputs"], batch["times"], batch["valid"], generator=generator)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = step_generator(self.config.trainer.seed, self.global_step, self.global_rank, self.device)
        out = self(batch, generator)
        batch_size = _batch_size(batch)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=batch_size)
        for key, value in out["losses"].items():
            self.log(f"train/loss_{key}", value, batch_size=batch_size)
        every = self.config.trainer.reconstruction_every_n_steps
        # Kept only for the step the reconstruction callback draws, not on every step.
        wanted = every > 0 and self.global_step % every == 0
        self.last_output = (self.global_step, batch, out) if wanted else None
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # Fixed masks per batch index: validation losses are comparable across epochs.
        generator = step_generator(self.config.trainer.seed + 1, batch_idx, self.global_rank, self.device)
        out = self.eval_model(batch["inputs"], batch["times"], batch["valid"], generator=generator)
        batch_size = _batch_size(batch)
        self.val_losses["total"].update(out["loss"].detach(), batch_size)
        for key, value in out["losses"].items():
            self.val_losses[key].update(value.detach(), batch_size)

    def on_validation_epoch_end(self) -> None:
        for key, metric in self.val_losses.items():
            if metric.update_count or self.trainer.world_size > 1:
                name = "val/loss" if key == "total" else f"val/loss_{key}"
                self.log(name, metric.compute(), prog_bar=key == "total", sync_dist=False)
            metric.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        from maestro.training.optim import build_optimizer

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


def _batch_size(batch: dict[str, Any]) -> int:
    return next(iter(batch["inputs"].values())).shape[0]
