"""Figures of S2 gap-filling: input, reconstruction and truth per date, and NDVI curves of pixels.

Drawn like pretraining's reconstruction figure (:func:`maestro.evaluation.figures.panel_grid`):
true colour B4, B3, B2 with a per-band 2-98 % stretch. Here one stretch, taken from the truth's
cloud-free pixels of every drawn date, serves every panel, so dates and columns compare by eye
(a per-panel stretch would make a hazy reconstruction look as crisp as the truth).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from maestro.dates import PAD_DATE, to_datetime64
from maestro.evaluation.figures import band_range, panel_grid, save_figure, stretched
from maestro.evaluation.gapfill import NIR, RED, S2_BANDS, ndvi
from maestro.modalities import get_modality

logger = logging.getLogger(__name__)

TRUE_COLOUR = tuple(S2_BANDS.index(band) for band in get_modality("s2").display_bands)
"""Indices of B4, B3, B2 in the registry's S2 band order."""
COLUMNS = ("input", "reconstruction", "truth")
RECONSTRUCTED_MARKER = "*"
"""Marker of reconstructed dates on the NDVI curves (observed dates: small dots)."""


def _dates(dates: Tensor | np.ndarray | Sequence[int], length: int) -> np.ndarray:
    values = np.asarray(dates.cpu() if isinstance(dates, Tensor) else dates, dtype=np.int64)
    if values.shape != (length,):
        raise ValueError(f"dates must be (T,) = ({length},) YYYYMMDD ints, got shape {values.shape}")
    return values


def _mask(name: str, mask: Tensor, shape: tuple[int, ...]) -> Tensor:
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"{name} must be a bool tensor of shape {shape}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask.detach().cpu()


def _iso(date: int) -> str:
    return f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"


def figure_dates(hidden: Tensor, cloudy: Tensor, max_rows: int = 12, clear_rows: int = 2) -> list[int]:
    """Dates drawn, in time order: all of them up to ``max_rows``; beyond, the held-out dates, then
    the cloudiest, with ``clear_rows`` clear dates evenly spread kept for comparison."""
    count = len(hidden)
    if count <= max_rows:
        return list(range(count))
    share = cloudy.flatten(1).float().mean(1)
    held = [t for t in range(count) if hidden[t]]
    clouded = sorted(
        (t for t in range(count) if not hidden[t] and share[t] > 0), key=lambda t: -float(share[t])
    )
    clear = [t for t in range(count) if not hidden[t] and share[t] == 0]
    chosen = (held + clouded)[: max_rows - min(clear_rows, len(clear))]
    spare = min(max_rows - len(chosen), len(clear))
    if spare:
        chosen += [clear[i] for i in np.linspace(0, len(clear) - 1, spare).round().astype(int)]
    return sorted(set(chosen))


def gapfill_panels(
    inputs: Tensor,
    reconstruction: Tensor,
    truth: Tensor,
    hidden: Tensor,
    cloudy: Tensor,
    dates: Tensor | np.ndarray | Sequence[int],
    max_rows: int = 12,
) -> tuple[dict[str, Tensor], list[str], Tensor]:
    """The :data:`COLUMNS` of :func:`gapfill_figure` as ``(N, 3, H, W)`` in [0, 1], a label per
    drawn date, and the ``(N, H, W)`` cloud outlines of the input column."""
    if inputs.ndim != 4 or inputs.shape[1] <= max(TRUE_COLOUR):
        raise ValueError(f"inputs must be S2 (T, C, H, W) with B4, B3, B2, got shape {tuple(inputs.shape)}")
    t, _, h, w = inputs.shape
    for name, value in (("reconstruction", reconstruction), ("truth", truth)):
        if value.shape != inputs.shape:
            raise ValueError(
                f"{name} must be shaped like inputs {tuple(inputs.shape)}, got {tuple(value.shape)}"
            )
    hidden, cloudy = _mask("hidden", hidden, (t,)), _mask("cloudy", cloudy, (t, h, w))
    days = _dates(dates, t)
    rows = figure_dates(hidden, cloudy, max_rows)
    images = [x.detach().cpu().float()[rows][:, list(TRUE_COLOUR)] for x in (inputs, reconstruction, truth)]
    low, high = band_range(rearrange(images[2], "t c h w -> c t h w"), ~cloudy[rows])
    low, high = low.view(-1, 1, 1), high.view(-1, 1, 1)
    panels: dict[str, list[Tensor]] = {name: [] for name in COLUMNS}
    nothing = torch.zeros(h, w, dtype=torch.bool)
    for i, date in enumerate(rows):
        for name, image in zip(COLUMNS, images, strict=True):
            grey = hidden[date].expand(h, w) if name == "input" else nothing  # the model never saw it
            panels[name].append(stretched(image[i], low, high, grey))
    labels = []
    for date in rows:
        share = float(cloudy[date].float().mean())
        state = "held out" if hidden[date] else f"cloudy {100 * share:.0f} %" if share > 0 else "clear"
        labels.append(f"{_iso(int(days[date]))}\n{state}")
    outlines = cloudy[rows] & ~hidden[rows][:, None, None]
    return {name: torch.stack(images) for name, images in panels.items()}, labels, outlines


def gapfill_figure(
    inputs: Tensor,
    reconstruction: Tensor,
    truth: Tensor,
    hidden: Tensor,
    cloudy: Tensor,
    dates: Tensor | np.ndarray | Sequence[int],
    path: str | Path,
    max_rows: int = 12,
    title: str | None = None,
    panel_inches: float = 2.0,
    dpi: int = 80,
) -> Path:
    """PNG, one row per drawn date (:func:`figure_dates`): the input as the model saw it (held-out
    dates grey, clouds outlined in red), the reconstruction and the truth, ``(T, C, H, W)``
    reflectances in the registry's S2 band order; ``hidden`` ``(T,)``, ``cloudy`` ``(T, H, W)``
    bool, ``dates`` ``(T,)`` YYYYMMDD."""
    panels, labels, outlines = gapfill_panels(inputs, reconstruction, truth, hidden, cloudy, dates, max_rows)
    if title is None:
        title = "S2 B4, B3, B2: input (held-out dates grey, clouds outlined), reconstruction, truth"
    return panel_grid(panels, labels, title, path, panel_inches, dpi, outlines={"input": outlines})


def ndvi_figure(
    series: Mapping[str, Tensor],
    dates: Tensor | np.ndarray | Sequence[int],
    pixels: Sequence[tuple[int, int]],
    reconstructed: Tensor,
    path: str | Path,
    red: int = RED,
    nir: int = NIR,
    dpi: int = 80,
) -> Path:
    """PNG, one panel per ``(row, col)`` pixel: its NDVI over the dates, one line per series
    (``{name: (T, C, H, W)}``: input, reconstruction, ...), the dates ``reconstructed`` ``(T, H, W)``
    at that pixel marked with a star. Padding dates (0) are left out."""
    if not series:
        raise ValueError("series is empty: no curve to draw")
    shape = tuple(next(iter(series.values())).shape)
    for name, values in series.items():
        if values.ndim != 4 or tuple(values.shape) != shape or shape[1] <= max(red, nir):
            raise ValueError(f"series {name!r} must be (T, C, H, W) with red and NIR like the others {shape}")
    t, _, h, w = shape
    days = _dates(dates, t)
    reconstructed = _mask("reconstructed", reconstructed, (t, h, w))
    if not pixels or any(not (0 <= r < h and 0 <= c < w) for r, c in pixels):
        raise ValueError(f"pixels must be (row, col) pairs inside {h} x {w}, got {list(pixels)}")
    curves = {
        name: ndvi(values.detach().cpu().float(), red, nir, band_dim=1) for name, values in series.items()
    }
    kept = days != PAD_DATE
    when = to_datetime64(days[kept])

    figure = Figure(figsize=(8.0, 2.2 * len(pixels) + 0.8), layout="constrained")
    axes = figure.subplots(len(pixels), 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i}" for i in range(len(series))]
    for ax, (row, col) in zip(axes, pixels, strict=True):
        marked = reconstructed[:, row, col].numpy()[kept]
        for colour, (name, curve) in zip(colours, curves.items(), strict=True):
            values = curve[:, row, col].numpy()[kept]
            ax.plot(when, values, color=colour, marker=".", markersize=4, linewidth=1.2, label=name)
            ax.scatter(
                when[marked], values[marked], marker=RECONSTRUCTED_MARKER, s=70, color=colour, zorder=3
            )
        ax.set_ylabel("NDVI")
        ax.set_title(f"pixel (row {row}, col {col}): {int(marked.sum())} reconstructed dates", fontsize=9)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker=".", label=name) for c, name in zip(colours, series, strict=True)
    ]
    handles.append(
        Line2D([], [], color="black", marker=RECONSTRUCTED_MARKER, linestyle="", label="reconstructed date")
    )
    axes[0].legend(handles=handles, fontsize=7, loc="best")
    return save_figure(figure, path, dpi)
