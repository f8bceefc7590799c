"""The masked-autoencoder task: masked reconstruction steps on top of the shared training base."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric

from maestro.models import MaestroMAE
from maestro.models.legacy import upgrade_pretrain_checkpoint
from maestro.training.task import TrainingTask, batch_size_of
from pretrain.config import PretrainConfig


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Mask randomness tied to (seed, step, rank): a resumed run draws the same masks."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return generator


class MaestroPretrainModule(TrainingTask):
    """Masked reconstruction loss per modality; validation on the EMA weights with fixed masks."""

    config_class = PretrainConfig
    config: PretrainConfig
    model: MaestroMAE

    def __init__(self, config: PretrainConfig | dict[str, Any]):
        super().__init__(config)
        # Accumulated per rank and reduced once per validation: ranks may see different numbers of
        # validation batches (each sample exactly once), so nothing may sync per step.
        self.val_losses = torch.nn.ModuleDict(
            {key: MeanMetric() for key in ("total", *self.config.model.encoder.modalities)}
        )
        self.last_output: tuple[int, dict[str, Any], dict[str, Any]] | None = None
        """(step, batch, outputs) of the step the reconstruction images are drawn for."""

    def build_model(self) -> MaestroMAE:
        return MaestroMAE(self.config.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the encoder/MAE split load through the documented key mapping.
        upgrade_pretrain_checkpoint(checkpoint)
        super().on_load_checkpoint(checkpoint)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        return self.model(
            batch["inputs"], batch["times"], batch["valid"], generator=generator, padded=batch.get("padded")
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = step_generator(self.config.trainer.seed, self.global_step, self.global_rank, self.device)
        out = self(batch, generator)
        batch_size = batch_size_of(batch)
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
        out = self.eval_model(
            batch["inputs"], batch["times"], batch["valid"], generator=generator, padded=batch.get("padded")
        )
        batch_size = batch_size_of(batch)
        self.val_losses["total"].update(out["loss"].detach(), batch_size)
        for key, value in out["losses"].items():
            self.val_losses[key].update(value.detach(), batch_size)

    def on_validation_epoch_end(self) -> None:
        for key, metric in self.val_losses.items():
            if metric.update_count or self.trainer.world_size > 1:
                name = "val/loss" if key == "total" else f"val/loss_{key}"
                self.log(name, metric.compute(), prog_bar=key == "total", sync_dist=False)
            metric.reset()
