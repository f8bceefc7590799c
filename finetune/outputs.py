"""What a fine-tuning test leaves in the run folder.

``{run}/test/``: ``metrics.json`` and ``per_class.md`` (also printed), ``confusion.png`` (row-normalised,
class names), ``samples.png`` (input / label / prediction with the task's fixed palette) and, with
``eval.save_predictions``, ``predictions/{patch_id}.tif``: uint8 class maps on the label's grid,
with its CRS, transform and a colour table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from torch import Tensor

from maestro.evaluation import (
    SegmentationScores,
    confusion_figure,
    per_class_table,
    prediction_panels,
    write_report,
)
from maestro.labels import IGNORE_INDEX, palette
from maestro.modalities import MODALITIES
from maestro.tasks import LabelTarget

log = logging.getLogger(__name__)


def display_image(
    inputs: Mapping[str, Tensor], bands: Mapping[str, Sequence[str]], index: int
) -> Tensor | None:
    """``(3, H, W)`` in [0, 1] of sample ``index``: the first input with display bands, first valid
    date, bands from the registry's ``display_bands``, 2-98 % stretch."""
    for key, values in inputs.items():
        wanted = MODALITIES[key].display_bands
        if not wanted or not all(b in bands[key] for b in wanted):
            continue
        image = values[index, 0, [list(bands[key]).index(b) for b in wanted]].float()
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        low, high = torch.quantile(image.flatten(), torch.tensor([0.02, 0.98], device=image.device))
        return ((image - low) / (high - low).clamp_min(1e-6)).clamp(0, 1).cpu()
    return None


def write_prediction(
    path: Path, classes: np.ndarray, raster: Mapping[str, Any], colours: Sequence[tuple]
) -> None:
    """One uint8 class map as a GeoTIFF on the label raster's grid (CRS and transform)."""
    transform = Affine(*raster["transform"][:6])
    profile = {
        "driver": "GTiff",
        "height": classes.shape[0],
        "width": classes.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": raster.get("crs"),
        "transform": transform,
        "compress": "deflate",
        "nodata": IGNORE_INDEX,
    }
    with rasterio.open(path, "w", **profile) as dst:
        # the colour table sets the TIFF's photometric tag, which GDAL cannot change once data is
        # written (it logs "Cannot modify tag" for every file): colours first
        dst.write_colormap(1, {value: (*rgb, 255) for value, rgb in enumerate(colours)})
        dst.write(classes.astype(np.uint8), 1)


class TestOutputs:
    """Collects figure samples and writes prediction rasters during the test, the report at its end."""

    def __init__(
        self,
        out_dir: Path,
        target: LabelTarget,
        bands: Mapping[str, Sequence[str]],
        num_figures: int = 4,
        save_predictions: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.target = target
        self.bands = bands
        self.num_figures = num_figures
        self.save_predictions = save_predictions
        self.colours = palette(target.nomenclature)
        self.samples: list[tuple[Tensor, Tensor, Tensor]] = []
        self.written = 0

    def add_batch(self, batch: Mapping[str, Any], labels: Tensor, predictions: Tensor, rank: int) -> None:
        """``labels``: the batch's targets as the metric saw them (ignored pixels at IGNORE_INDEX)."""
        if rank == 0:
            for index in range(predictions.shape[0]):
                if len(self.samples) >= self.num_figures:
                    break
                image = display_image(batch["inputs"], self.bands, index)
                if image is not None:
                    self.samples.append((image, labels[index].cpu(), predictions[index].cpu()))
        if self.save_predictions:
            folder = self.out_dir / "predictions"
            folder.mkdir(parents=True, exist_ok=True)
            for index, meta in enumerate(batch["meta"]):
                raster = (meta.get("rasters") or {}).get(self.target.label_modality)
                if raster is None or "transform" not in raster:
                    raise ValueError(
                        f"patch {meta.get('patch_id')}: the shard holds no georeferencing for its label"
                    )
                name = Path(str(meta["patch_id"])).name  # never a path from the data
                write_prediction(
                    folder / f"{name}.tif", predictions[index].cpu().numpy(), raster, self.colours
                )
                self.written += 1

    def finish(self, scores: SegmentationScores) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_report(scores, self.out_dir)
        log.info(
            "test scores (%s level %d):\n%s", self.target.task, self.target.level, per_class_table(scores)
        )
        title = f"{self.target.task} level {self.target.level}: mIoU {100 * scores.miou:.2f}"
        confusion_figure(scores, self.out_dir / "confusion.png", title=title)
        if self.samples:
            images, labels, predictions = (torch.stack(parts) for parts in zip(*self.samples, strict=True))
            prediction_panels(
                images,
                labels,
                predictions,
                self.colours,
                self.out_dir / "samples.png",
                class_names=self.target.names,
            )
        log.info("report, figures%s in %s", " and prediction GeoTIFFs" if self.written else "", self.out_dir)
