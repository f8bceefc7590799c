"""The masked-autoencoder task: masked reconstruction steps on top of the shared training base."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import SumMetric

from maestro.hub.weights import upgrade_pretrain_checkpoint
from maestro.models import MaestroMAE
from maestro.models.loss import weighted_total
from maestro.models.masking import SampleGenerators
from maestro.sample import META
from maestro.training.task import TrainingTask, batch_size_of
from pretrain.config import PretrainConfig


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Mask randomness tied to (seed, step, rank): a resumed run draws the same masks."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return generator


def sample_keys(batch: dict[str, Any]) -> list[str] | None:
    """The batch's patch ids, or None when a sample has none (then masks follow the batch)."""
    keys = [meta.get("patch_id") if isinstance(meta, dict) else None for meta in batch.get(META, [])]
    return [str(k) for k in keys] if keys and None not in keys else None


class MaestroPretrainModule(TrainingTask):
    """Masked reconstruction loss per modality; validation on the EMA weights with fixed masks.

    The validation loss is pooled over the whole split: per modality, the L1 error summed over
    every masked pixel of every sample (on all ranks) over their count, then the modalities
    weighted as in training. Each sample's mask is drawn from its own patch id, so the value does
    not depend on batch size, batch composition or the number of ranks.
    """

    config_class = PretrainConfig
    config: PretrainConfig
    model: MaestroMAE

    def __init__(self, config: PretrainConfig | dict[str, Any]):
        super().__init__(config)
        # Accumulated per rank and reduced once per validation: ranks may see different numbers of
        # validation batches (each sample exactly once), so nothing may sync per step.
        modalities = self.config.model.encoder.modalities
        self.val_errors = torch.nn.ModuleDict({key: SumMetric() for key in modalities})
        self.val_pixels = torch.nn.ModuleDict({key: SumMetric() for key in modalities})
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
        self.log("train/loss", out["loss"], batch_size=batch_size)  # shown by the progress bar
        for key, value in out["losses"].items():
            self.log(f"train/loss_{key}", value, batch_size=batch_size)
        every = self.config.trainer.reconstruction_every_n_steps
        # Kept only for the step the reconstruction callback draws, not on every step.
        wanted = every > 0 and self.global_step % every == 0
        self.last_output = (self.global_step, batch, out) if wanted else None
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        seed = self.config.trainer.seed + 1
        keys = sample_keys(batch)
        generator = (
            SampleGenerators.from_keys(keys, seed, self.device)
            if keys is not None
            else step_generator(seed, batch_idx, self.global_rank, self.device)
        )
        out = self.eval_model(
            batch["inputs"], batch["times"], batch["valid"], generator=generator, padded=batch.get("padded")
        )
        for key, loss in out["losses"].items():
            count = out["counts"][key].detach().double()
            self.val_errors[key].update(loss.detach().double() * count)
            self.val_pixels[key].update(count)

    def on_validation_epoch_end(self) -> None:
        # compute() reduces over ranks, once per validation: ranks may have run different numbers
        # of batches (each sample exactly once), so nothing may sync per step.
        errors = {key: metric.compute() for key, metric in self.val_errors.items()}
        counts = {key: metric.compute() for key, metric in self.val_pixels.items()}
        if any(bool(c > 0) for c in counts.values()):
            losses = {key: errors[key] / counts[key].clamp(min=1) for key in errors}
            total = weighted_total(losses, counts, self.model.loss_weights)
            self.log("val/loss", total.float(), prog_bar=True, sync_dist=False)
            for key, loss in losses.items():
                if counts[key] > 0:
                    self.log(f"val/loss_{key}", loss.float(), sync_dist=False)
        for metric in (*self.val_errors.values(), *self.val_pixels.values()):
            metric.reset()
