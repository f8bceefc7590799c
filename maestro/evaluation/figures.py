"""Figures of an evaluation: the row-normalised confusion matrix, predicted maps beside the labels,
and the grid of image panels that pretraining's reconstruction figure and gap-filling's share.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state, no
display, safe in loader workers and on headless nodes. Colours come from a fixed palette
(:func:`maestro.labels.palette`) so maps of different runs can be compared by eye.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from maestro.evaluation.metrics import SegmentationScores
from maestro.labels import IGNORE_INDEX
from maestro.tasks import predicted_classes

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]
ArrayLike = np.ndarray | torch.Tensor

CELL_VALUES_MAX_CLASSES = 20
"""Above this many classes the confusion cells carry no printed values (they would not fit)."""
GREY = 0.5
"""Fill of pixels a panel does not show (hidden from the model, or not predicted)."""
QUANTILES = (0.02, 0.98)
"""Per-band stretch of image panels: 2-98 % of the reference pixels map to black-white."""
_LEGEND_COLUMNS = 3
_LEGEND_ROW_INCHES = 0.22
_TITLE_INCHES = 0.35


def _numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        return (array.float() if array.is_floating_point() else array).numpy()
    return np.asarray(array)


def colorize(classes: ArrayLike, palette: Sequence[RGB], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``(H, W)`` class map -> ``(H, W, 3)`` uint8 image; ``ignore_index`` pixels are black."""
    values = _numpy(classes).astype(np.int64)
    ignored = values == ignore_index
    scored = values[~ignored]
    if scored.size and (scored.min() < 0 or scored.max() >= len(palette)):
        raise ValueError(
            f"class values {int(scored.min())}..{int(scored.max())} outside a palette of "
            f"{len(palette)} colours (ignore index {ignore_index})"
        )
    colours = np.asarray(palette, dtype=np.uint8).reshape(len(palette), 3)
    image = colours[np.where(ignored, 0, values)]
    image[ignored] = 0
    return image


def confusion_figure_inches(num_classes: int) -> float:
    """Side of the square confusion figure: grows with the class count so names stay legible."""
    return max(6.0, 3.0 + 0.3 * num_classes)


def save_figure(figure: Figure, path: str | Path, dpi: int) -> Path:
    """PNG of a bare Agg figure at ``path`` (parents made)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out, dpi=dpi, format="png")
    logger.debug("wrote %s", out)
    return out


def confusion_figure(
    scores: SegmentationScores, path: str | Path, title: str | None = None, dpi: int = 100
) -> Path:
    """PNG of the confusion matrix normalised per ground-truth row (the diagonal is recall).

    Rows of classes without ground truth stay blank. Cell values (percent) are printed up to
    :data:`CELL_VALUES_MAX_CLASSES` classes.
    """
    counts = scores.confusion.astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.full_like(counts, np.nan)
    np.divide(counts, rows, out=normalised, where=rows > 0)
    k = scores.num_classes
    side = confusion_figure_inches(k)
    font = 8 if k <= CELL_VALUES_MAX_CLASSES else 7

    figure = Figure(figsize=(side, side), layout="constrained")
    ax = figure.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")
    image = ax.imshow(
        np.ma.masked_invalid(normalised), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest"
    )
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=scores.class_names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=scores.class_names, fontsize=font)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if title is None:
        title = (
            f"mIoU {100 * scores.miou:.2f} · OA {100 * scores.overall_accuracy:.2f} "
            f"({len(scores.classes_used)} classes)"
        )
    ax.set_title(title)
    figure.colorbar(image, ax=ax, fraction=0.04, label="share of the ground-truth row")
    if k <= CELL_VALUES_MAX_CLASSES:
        for (row, col), value in np.ndenumerate(normalised):
            if not math.isnan(value):
                ax.text(
                    col,
                    row,
                    f"{100 * value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if value > 0.5 else "black",
                )
    return save_figure(figure, path, dpi)


def prediction_panels_inches(
    num_samples: int, num_legend_entries: int, panel_inches: float = 3.0
) -> tuple[float, float]:
    """(width, height) of :func:`prediction_panels`: three panels a row, titles, then the legend."""
    legend_rows = math.ceil(num_legend_entries / _LEGEND_COLUMNS)
    height = num_samples * panel_inches + _TITLE_INCHES + legend_rows * _LEGEND_ROW_INCHES + 0.1
    return 3 * panel_inches, height


def prediction_panels(
    images: ArrayLike,
    labels: ArrayLike,
    predictions: ArrayLike,
    palette: Sequence[RGB],
    path: str | Path,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
    max_samples: int = 4,
    panel_inches: float = 3.0,
    dpi: int = 100,
    ignored_classes: Sequence[int] = (),
) -> Path:
    """PNG grid, one sample a row: input RGB, label, prediction; a legend of the classes shown.

    ``images`` are ``(N, 3, H, W)`` floats in [0, 1]; ``labels`` ``(N, H, W)`` with ``ignore_index``
    (drawn black); ``predictions`` ``(N, H, W)`` class indices or ``(N, K, H, W)`` logits, whose
    ``ignored_classes`` channels are never drawn as the prediction (as in the metrics).
    """
    rgb = rearrange(np.clip(_numpy(images), 0.0, 1.0), "n c h w -> n h w c")
    truth = _numpy(labels)
    predicted = _numpy(predictions)
    if predicted.ndim == truth.ndim + 1:
        predicted = predicted_classes(torch.from_numpy(predicted), ignored_classes, dim=1).numpy()
    if rgb.shape[-1] != 3 or truth.ndim != 3 or predicted.shape != truth.shape or len(rgb) != len(truth):
        raise ValueError(
            f"expected images (N, 3, H, W) and labels/predictions (N, H, W), got "
            f"{tuple(_numpy(images).shape)}, {truth.shape}, {predicted.shape}"
        )
    count = min(len(truth), max_samples)
    if count == 0:
        raise ValueError("no sample to draw")
    truth, predicted, rgb = truth[:count], predicted[:count], rgb[:count]
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(len(palette))]

    shown = np.union1d(np.unique(truth), np.unique(predicted)).astype(np.int64)
    handles = [
        Patch(facecolor=np.asarray(palette[c]) / 255, edgecolor="black", label=names[c])
        for c in shown
        if c != ignore_index and 0 <= c < len(palette)
    ]
    if (truth == ignore_index).any():
        handles.append(Patch(facecolor="black", edgecolor="black", label="ignored"))

    width, height = prediction_panels_inches(count, len(handles), panel_inches)
    figure = Figure(figsize=(width, height))
    top = 1 - _TITLE_INCHES / height
    bottom = (height - _TITLE_INCHES - count * panel_inches) / height
    grid = figure.add_gridspec(
        count, 3, left=0.01, right=0.99, top=top, bottom=bottom, wspace=0.03, hspace=0.03
    )
    for row in range(count):
        panels = (
            rgb[row],
            colorize(truth[row], palette, ignore_index),
            colorize(predicted[row], palette, ignore_index),
        )
        for col, (panel, title) in enumerate(zip(panels, ("input", "label", "prediction"), strict=True)):
            ax = figure.add_subplot(grid[row, col])
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=10)
    if handles:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=_LEGEND_COLUMNS,
            fontsize=7,
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )
    return save_figure(figure, path, dpi)


def band_range(image: Tensor, where: Tensor) -> tuple[Tensor, Tensor]:
    """Per-band :data:`QUANTILES` of ``image`` ``(C, ...)`` over the pixels ``where`` (its trailing
    shape; all pixels if none is True), as ``(C, 1, ..., 1)`` low and high bounds."""
    values = image[:, where] if bool(where.any()) else image.flatten(1)
    low, high = torch.quantile(values.float(), torch.tensor(QUANTILES), dim=1)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return low.view(shape), torch.maximum(high, low + 1e-6).view(shape)


def stretched(image: Tensor, low: Tensor, high: Tensor, grey: Tensor) -> Tensor:
    """``(C, H, W)`` with C in (1, 3) -> ``(3, H, W)`` in [0, 1]; ``grey`` ``(H, W)`` pixels are
    filled with :data:`GREY`."""
    shown = ((image - low) / (high - low)).clamp(0, 1).expand(3, -1, -1)
    return torch.where(grey, torch.full_like(shown, GREY), shown)


def panel_grid(
    panels: dict[str, Tensor],
    row_labels: Sequence[str],
    title: str,
    path: str | Path,
    panel_inches: float = 2.0,
    dpi: int = 80,
    outlines: dict[str, Tensor] | None = None,
) -> Path:
    """PNG of image panels: one column per ``panels`` key (its title), each ``(N, 3, H, W)`` in
    [0, 1], one row per label. ``outlines`` ``{column: (N, H, W) bool}`` draws each mask's edge in
    red over that column (clouds over an input)."""
    rows = len(row_labels)
    if rows == 0 or any(p.ndim != 4 or p.shape[0] != rows or p.shape[1] != 3 for p in panels.values()):
        shapes = {name: tuple(p.shape) for name, p in panels.items()}
        raise ValueError(f"panels must be (N, 3, H, W) with N = {rows} row labels, got {shapes}")
    height = rows * panel_inches + 0.6
    figure = Figure(figsize=(len(panels) * panel_inches + 0.4, height))
    grid = figure.add_gridspec(
        rows, len(panels), left=0.06, right=0.99, top=1 - 0.5 / height, bottom=0.01, wspace=0.03, hspace=0.03
    )
    for row, label in enumerate(row_labels):
        for col, (name, images) in enumerate(panels.items()):
            ax = figure.add_subplot(grid[row, col])
            ax.imshow(rearrange(images[row], "c h w -> h w c").numpy(), interpolation="nearest")
            outline = (outlines or {}).get(name)
            if outline is not None and bool(outline[row].any()) and not bool(outline[row].all()):
                ax.contour(outline[row].float().numpy(), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=9, y=1 - 0.06 / height, va="top")  # above the column titles
    return save_figure(figure, path, dpi)
