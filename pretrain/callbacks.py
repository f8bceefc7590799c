"""Reconstruction images: input / masked input / reconstruction per modality, as PNG."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchvision.utils import save_image

from maestro.models.loss import denormalise

log = logging.getLogger(__name__)


def _bands(image: torch.Tensor) -> torch.Tensor:
    """First three bands as RGB-like (NIR,R,G for aerial), or grey from the first band."""
    return image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)


def _stretch(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = _bands(image).flatten()
    return torch.quantile(values, 0.02), torch.quantile(values, 0.98)


def _display(image: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (3, H, W) in [0, 1] with the given 2-98 % stretch."""
    return ((_bands(image) - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)


def reconstruction_panel(
    target: torch.Tensor, prediction: torch.Tensor, pixel_mask: torch.Tensor, valid: torch.Tensor, size: int = 128
) -> torch.Tensor:
    """Rows of [input, masked input, input with reconstructed masked pixels] for the first valid
    date of each sample; tensors are (B, T, C, H, W) in input units. One stretch per row, so the
    three images of a row are directly comparable."""
    rows = []
    for sample in range(target.shape[0]):
        dates = torch.nonzero(valid[sample]).flatten()
        date = int(dates[0]) if len(dates) else 0
        truth, guess, hidden = target[sample, date], prediction[sample, date], pixel_mask[sample, date]
        truth = truth.float()
        masked = torch.where(hidden, torch.full_like(truth, float(truth.min())), truth)
        pasted = torch.where(hidden, guess.float(), truth)
        low, high = _stretch(truth)
        for image in (truth, masked, pasted):
            shown = _display(image, low, high)
            rows.append(torch.nn.functional.interpolate(shown[None], size=(size, size), mode="nearest")[0])
    return torch.stack(rows)


class ReconstructionImages(L.Callback):
    """Rank 0 writes one PNG per modality (up to ``max_samples`` rows) under
    ``{output_dir}/reconstructions`` for the steps the module kept outputs of
    (``trainer.reconstruction_every_n_steps``)."""

    def __init__(self, output_dir: Path, max_samples: int = 4):
        self.output_dir = Path(output_dir) / "reconstructions"
        self.max_samples = max_samples

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        cached = getattr(pl_module, "last_output", None)
        if cached is None or not trainer.is_global_zero:
            return
        step, batch, out = cached
        pl_module.last_output = None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        count = self.max_samples
        specs = pl_module.model.specs
        for key in out["targets"]:
            images = batch["inputs"][key][:count].detach().cpu()
            spec = specs[key]
            prediction = denormalise(out["predictions"][key][:count].detach().cpu(), images,
                                     spec.patch_size, spec.norm_groups)
            panel = reconstruction_panel(
                images,
                prediction,
                out["pixel_masks"][key][:count].cpu(),
                batch["valid"][key][:count].cpu(),
            )
            path = self.output_dir / f"step{step:07d}_{key}.png"
            save_image(panel, path, nrow=3, padding=2)
        log.debug("reconstruction images for step %d in %s", step, self.output_dir)
