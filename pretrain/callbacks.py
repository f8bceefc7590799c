"""Reconstruction figures: what the masked autoencoder actually predicts, one PNG per modality.

Columns: the input, the masked input (hidden patches grey), the target and the prediction. The
target is the model's own: each (patch, band group) standardised
(:func:`maestro.models.loss.normalise_patches`), or the network-scale pixels with
``normalize_targets`` off, so target and prediction are drawn in that space with one stretch per
band, taken from the target. Putting each hidden patch's true mean and spread back into the
prediction (as a paste into the input would need) makes an untrained model look like a trained
one; here an untrained model's prediction column is visibly flat. Bands follow the registry's
``display_bands`` (aerial R,G,B; S2 B4,B3,B2 true colour; DEM the DSM; S1 VV); visible pixels are
grey in the last two columns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from maestro.evaluation.figures import GREY as GREY  # re-exported: the fill of the panels drawn here
from maestro.evaluation.figures import band_range, panel_grid, stretched
from maestro.modalities import get_modality
from maestro.models.config import ModalitySpec

log = logging.getLogger(__name__)

COLUMNS = ("input", "masked input", "target", "prediction")
"""Panel columns; target and prediction are in the normalised target space."""


def display_indices(spec: ModalitySpec) -> list[int]:
    """Indices (into the model's bands) of the registry's ``display_bands``: three for colour, one
    for grey; the first band when the model lacks some of them."""
    wanted = get_modality(spec.key).display_bands
    if wanted and all(band in spec.bands for band in wanted):
        return [spec.bands.index(band) for band in wanted]
    return [0]


def _pick_date(hidden: Tensor, valid: Tensor) -> int:
    """The valid date with most hidden pixels (a fully visible date shows nothing to predict)."""
    counts = hidden.flatten(1).sum(1).float()
    counts[~valid] = -1
    return int(counts.argmax())


def reconstruction_panels(
    spec: ModalitySpec,
    inputs: Tensor,
    targets: Tensor,
    predictions: Tensor,
    pixel_masks: Tensor,
    valid: Tensor,
    size: int = 128,
) -> tuple[dict[str, Tensor], list[int]]:
    """One row per sample of the :data:`COLUMNS`, each ``(B, 3, size, size)`` in [0, 1], and the
    date drawn for each sample. Tensors are ``(B, T, C, H, W)`` (``valid`` ``(B, T)``): inputs in
    input units, targets and predictions in normalised target space, masks True where the loss
    looks (hidden pixels of valid dates)."""
    bands = display_indices(spec)
    columns: dict[str, list[Tensor]] = {name: [] for name in COLUMNS}
    dates = []
    for sample in range(inputs.shape[0]):
        date = _pick_date(pixel_masks[sample].any(1), valid[sample])
        dates.append(date)
        hidden = pixel_masks[sample, date].any(0)
        image, target, guess = (t[sample, date, bands].float() for t in (inputs, targets, predictions))
        low, high = band_range(image, torch.ones_like(hidden))
        columns["input"].append(stretched(image, low, high, torch.zeros_like(hidden)))
        columns["masked input"].append(stretched(image, low, high, hidden))
        low, high = band_range(target, hidden)  # the same stretch for target and prediction
        columns["target"].append(stretched(target, low, high, ~hidden))
        columns["prediction"].append(stretched(guess, low, high, ~hidden))
    panels = {
        name: torch.nn.functional.interpolate(torch.stack(images), size=(size, size), mode="nearest")
        for name, images in columns.items()
    }
    return panels, dates


def reconstruction_figure(
    panels: dict[str, Tensor],
    dates: list[int],
    title: str,
    path: Path,
    panel_inches: float = 2.0,
    dpi: int = 80,
) -> Path:
    """PNG of :func:`reconstruction_panels`: column titles, one row per sample labelled with its date."""
    labels = [f"sample {row}, date {date}" for row, date in enumerate(dates)]
    return panel_grid({name: panels[name] for name in COLUMNS}, labels, title, path, panel_inches, dpi)


class ReconstructionImages(L.Callback):
    """Rank 0 writes ``{output_dir}/reconstructions/step{N}_{modality}.png`` (up to
    ``max_samples`` rows) for the steps the module kept outputs of
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
        count = self.max_samples
        for key, spec in pl_module.model.specs.items():
            panels, dates = reconstruction_panels(
                spec,
                *(
                    t[key][:count].detach().float().cpu()
                    for t in (batch["inputs"], out["targets"], out["predictions"])
                ),
                out["pixel_masks"][key][:count].cpu(),
                batch["valid"][key][:count].cpu(),
            )
            shown = ",".join(spec.bands[i] for i in display_indices(spec))
            title = f"{key} ({shown}) at step {step}: target and prediction in normalised patch space"
            reconstruction_figure(panels, dates, title, self.output_dir / f"step{step:07d}_{key}.png")
        log.debug("reconstruction images for step %d in %s", step, self.output_dir)
