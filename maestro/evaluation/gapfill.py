"""Gap-filling of Sentinel-2 series: the two temporal baselines and the scores of held-out dates.

Series are ``(B, T, C, H, W)`` reflectances (DN / 10000), ``days`` ``(B, T)`` day numbers that
increase over the valid dates, ``known`` ``(B, T, H, W)`` (or ``(B, T)``) True where a pixel's date
may serve as a source (clear and valid). Both baselines keep known dates bit-identical and are
vectorised over pixels and dates without a host sync: they run inside the model, on its device.

Scores are accumulated as float64 sums over every batch (and every process) before anything is
divided, so they do not depend on batch size or order.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor
from torchmetrics import Metric

from maestro.modalities import get_modality

logger = logging.getLogger(__name__)

S2_BANDS: tuple[str, ...] = get_modality("s2").bands
RED = S2_BANDS.index("B4")
NIR = S2_BANDS.index("B8")
SSIM_WINDOW = 5
"""Side of the SSIM window: S2 patches are about 10 x 10 px, where the usual 11 px leaves nothing."""
SSIM_SIGMA = 1.0
"""Gaussian weights of the window (centre 1, neighbours 0.61, corners of the 5 px window 0.14)."""
_SSIM_K = (0.01, 0.03)


def _known_dates(series: Tensor, days: Tensor, known: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Check shapes; ``known`` as ``(B, T, H, W)`` and ``days`` as float64 ``(B, T, H, W)``."""
    if series.ndim != 5:
        raise ValueError(f"series must be (B, T, C, H, W), got shape {tuple(series.shape)}")
    b, t, _, h, w = series.shape
    if days.shape != (b, t):
        raise ValueError(f"days must be (B, T) = {(b, t)}, got shape {tuple(days.shape)}")
    if known.dtype != torch.bool:
        raise ValueError(f"known must be a bool tensor, got {known.dtype}")
    if known.shape == (b, t):
        known = repeat(known, "b t -> b t h w", h=h, w=w)
    if known.shape != (b, t, h, w):
        raise ValueError(f"known must be (B, T, H, W) = {(b, t, h, w)} or (B, T), got {tuple(known.shape)}")
    # float64: day numbers since an epoch lose their fractions of a day in float32
    return series, repeat(days.double(), "b t -> b t h w", h=h, w=w), known


def _neighbours(known: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the nearest known date at or before / at or after each date, per pixel; -1 / T where
    there is none. Along T: a running max of known indices, and a running min from the end."""
    t = known.shape[1]
    index = torch.arange(t, device=known.device).view(1, t, 1, 1)
    before = torch.where(known, index, -1).cummax(dim=1).values
    after = torch.where(known, index, t).flip(1).cummin(dim=1).values.flip(1)
    return before, after


def _take(series: Tensor, days: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Values ``(B, T, C, H, W)`` and days ``(B, T, H, W)`` at per-pixel date indices (clamped)."""
    index = index.clamp(0, series.shape[1] - 1)
    values = series.gather(1, repeat(index, "b t h w -> b t c h w", c=series.shape[2]))
    return values, days.gather(1, index)


def linear_interpolation(series: Tensor, days: Tensor, known: Tensor) -> Tensor:
    """Each unknown date of each pixel, linearly interpolated in time between that pixel's nearest
    known dates before and after it; the one side's value where only one side is known; the input
    where the pixel has no known date. Known dates are returned unchanged."""
    series, days, known = _known_dates(series, days, known)
    before, after = _neighbours(known)
    return torch.where(known.unsqueeze(2), series, _interpolate(series, days, before, after))


def leave_one_out(series: Tensor, days: Tensor, known: Tensor) -> Tensor:
    """Every date of each pixel, known or not, interpolated as :func:`linear_interpolation` does
    from that pixel's nearest known dates strictly before and after it (itself left out): what the
    interpolation would have said of a date it could see. The cloud-removal network reads a clear
    pixel's departure from it."""
    series, days, known = _known_dates(series, days, known)
    before, after = _neighbours(known)
    t = series.shape[1]
    before = torch.cat([torch.full_like(before[:, :1], -1), before[:, :-1]], dim=1)
    after = torch.cat([after[:, 1:], torch.full_like(after[:, :1], t)], dim=1)
    return _interpolate(series, days, before, after)


def _interpolate(series: Tensor, days: Tensor, before: Tensor, after: Tensor) -> Tensor:
    """Linear in time between the dates ``before`` and ``after`` (per pixel; -1 / T: none)."""
    start, start_day = _take(series, days, before)
    end, end_day = _take(series, days, after)
    has_start, has_end = before >= 0, after < series.shape[1]
    span = torch.where(has_start & has_end, end_day - start_day, torch.ones_like(days))
    fraction = ((days - start_day) / span.clamp_min(1e-6)).clamp(0, 1)  # padded dates' days are arbitrary
    fraction = fraction.to(series.dtype).unsqueeze(2)
    return torch.where(
        (has_start & has_end).unsqueeze(2),
        start + fraction * (end - start),
        torch.where(has_start.unsqueeze(2), start, torch.where(has_end.unsqueeze(2), end, series)),
    )


def nearest_clear(series: Tensor, days: Tensor, known: Tensor) -> Tensor:
    """Each unknown date of each pixel takes the value of that pixel's known date nearest in time
    (the earlier one on a tie); the input where the pixel has no known date."""
    series, days, known = _known_dates(series, days, known)
    before, after = _neighbours(known)
    start, start_day = _take(series, days, before)
    end, end_day = _take(series, days, after)
    inf = torch.full_like(days, math.inf)
    gap_before = torch.where(before >= 0, days - start_day, inf)
    gap_after = torch.where(after < series.shape[1], end_day - days, inf)
    filled = torch.where((gap_before <= gap_after).unsqueeze(2), start, end)
    none = (before < 0) & (after >= series.shape[1])
    return torch.where((known | none).unsqueeze(2), series, filled)


def ndvi(series: Tensor, red: int = RED, nir: int = NIR, band_dim: int = -3) -> Tensor:
    """(NIR - red) / (NIR + red) over ``band_dim``; NaN where both are zero (no signal, not 0)."""
    r, n = series.select(band_dim, red).double(), series.select(band_dim, nir).double()
    total = n + r
    return torch.where(total != 0, (n - r) / total, torch.full_like(total, math.nan)).to(series.dtype)


def ssim_images(
    prediction: Tensor, truth: Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA
) -> Tensor:
    """SSIM (data range 1.0) of ``(N, C, H, W)`` image pairs -> ``(N,)``, averaged over bands and
    the windows that lie wholly inside the image, as Wang et al.'s reference code and scikit-image
    do: on a 10 px patch, 64 of the 100 windows of 5 px centred on each pixel would see mirrored
    pixels (torchmetrics 1.9 averages that reflect-padded map). Gaussian window of ``window`` px."""
    if prediction.shape[-2] < window or prediction.shape[-1] < window:
        raise ValueError(
            f"images of {tuple(prediction.shape[-2:])} px are smaller than the {window} px window"
        )
    x, y = prediction.double(), truth.double()
    offsets = torch.arange(window, dtype=torch.float64, device=x.device) - (window - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.outer(weights, weights) / weights.sum() ** 2
    channels = x.shape[1]
    kernel = repeat(kernel, "h w -> c 1 h w", c=channels)

    def blur(image: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(image, kernel, groups=channels)

    mean_x, mean_y = blur(x), blur(y)
    var_x = (blur(x * x) - mean_x**2).clamp_min(0)  # rounding can leave a flat window below 0
    var_y = (blur(y * y) - mean_y**2).clamp_min(0)
    cov = blur(x * y) - mean_x * mean_y
    c1, c2 = _SSIM_K[0] ** 2, _SSIM_K[1] ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return index.flatten(1).mean(1)


def spectral_angle(prediction: Tensor, truth: Tensor, band_dim: int = -3) -> Tensor:
    """Angle in degrees between predicted and true spectra, float64; 90 where a spectrum is zero."""
    p, t = prediction.double(), truth.double()
    norms = p.norm(dim=band_dim) * t.norm(dim=band_dim)
    cosine = (p * t).sum(band_dim) / norms.clamp_min(1e-12)
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))


class _GapFillSums(Metric):
    """float64 sums, summed across processes when computed."""

    full_state_update = False

    def __init__(self, num_bands: int) -> None:
        super().__init__()
        zeros = torch.zeros(num_bands, dtype=torch.float64)
        self.add_state("absolute", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("squared", zeros.clone(), dist_reduce_fx="sum")
        for name in ("pixels", "angle", "ssim", "images"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, **sums: Tensor) -> None:
        for name, value in sums.items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self._defaults}


@dataclass(frozen=True)
class GapFillScores:
    """Scores over the held-out pixels of a split, in reflectance; NaN where nothing was scored.

    ``ssim`` averages whole held-out date images only (``images`` of them); ``sam`` is the mean
    spectral angle in degrees over the scored pixels; ``psnr`` is in dB for a peak of 1.0.
    """

    band_names: tuple[str, ...]
    band_mae: tuple[float, ...]
    band_rmse: tuple[float, ...]
    mae: float
    rmse: float
    psnr: float
    ssim: float
    sam: float
    pixels: int
    images: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: overall scores, then ``bands`` ``{name: {"mae", "rmse"}}``."""
        return {
            "mae": self.mae,
            "rmse": self.rmse,
            "psnr_db": self.psnr,
            "ssim": self.ssim,
            "sam_degrees": self.sam,
            "pixels": self.pixels,
            "images": self.images,
            "bands": {
                name: {"mae": mae, "rmse": rmse}
                for name, mae, rmse in zip(self.band_names, self.band_mae, self.band_rmse, strict=True)
            },
        }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _psnr(mse: float) -> float:
    """dB for a peak of 1.0 reflectance; infinite for a perfect fill."""
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else -10 * math.log10(mse)


class GapFillMetrics(torch.nn.Module):
    """Streams ``(prediction, truth, mask)`` batches into :class:`GapFillScores`.

    ``band_names`` default to the registry's S2 bands when ``num_bands`` matches them. SSIM uses a
    ``ssim_window`` px Gaussian window (:func:`ssim_images`); every whole held-out date image must
    be at least that large.
    """

    def __init__(
        self,
        num_bands: int,
        band_names: Sequence[str] | None = None,
        ssim_window: int = SSIM_WINDOW,
        ssim_sigma: float = SSIM_SIGMA,
    ) -> None:
        super().__init__()
        if num_bands < 1:
            raise ValueError(f"num_bands must be positive, got {num_bands}")
        if band_names is None:
            band_names = S2_BANDS if num_bands == len(S2_BANDS) else [f"band {i}" for i in range(num_bands)]
        if len(band_names) != num_bands:
            raise ValueError(f"{len(band_names)} band names for {num_bands} bands")
        self.band_names = tuple(band_names)
        self.ssim_window, self.ssim_sigma = ssim_window, ssim_sigma
        self.sums = _GapFillSums(num_bands)

    @property
    def num_bands(self) -> int:
        return len(self.band_names)

    def update(self, prediction: Tensor, truth: Tensor, mask: Tensor) -> None:
        """Add a batch: ``prediction`` and ``truth`` ``(B, T, C, H, W)``, ``mask`` ``(B, T, H, W)``
        True on the pixels scored. Values outside the mask never count, NaN included."""
        if truth.ndim != 5 or truth.shape[2] != self.num_bands:
            raise ValueError(f"truth must be (B, T, {self.num_bands}, H, W), got shape {tuple(truth.shape)}")
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and truth {tuple(truth.shape)} differ")
        b, t, _, h, w = truth.shape
        if mask.shape != (b, t, h, w) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool (B, T, H, W) = {(b, t, h, w)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        error = prediction.double() - truth.double()
        scored = mask.unsqueeze(2)
        absolute = torch.where(scored, error.abs(), 0.0).sum((0, 1, 3, 4))
        squared = torch.where(scored, error.square(), 0.0).sum((0, 1, 3, 4))
        angle = torch.where(mask, spectral_angle(prediction, truth), 0.0).sum()
        whole = rearrange(mask, "b t h w -> (b t) (h w)").all(1)
        pair = (rearrange(x, "b t c h w -> (b t) c h w") for x in (prediction, truth))
        ssim = ssim_images(*pair, self.ssim_window, self.ssim_sigma)
        self.sums.update(
            absolute=absolute,
            squared=squared,
            pixels=mask.sum(dtype=torch.float64),
            angle=angle,
            ssim=torch.where(whole, ssim, 0.0).sum(),
            images=whole.sum(dtype=torch.float64),
        )

    def compute(self) -> GapFillScores:
        """Scores over everything updated since the last reset, on every process alike."""
        with warnings.catch_warnings():  # no batch yet (or on this process) is no error: NaN scores
            warnings.filterwarnings("ignore", message=".*called before the ``update`` method")
            sums = {name: value.cpu() for name, value in self.sums.compute().items()}
        pixels = float(sums["pixels"])
        band_mse = [_ratio(float(v), pixels) for v in sums["squared"]]
        mse = _ratio(float(sums["squared"].sum()), pixels * self.num_bands)
        scores = GapFillScores(
            band_names=self.band_names,
            band_mae=tuple(_ratio(float(v), pixels) for v in sums["absolute"]),
            band_rmse=tuple(math.sqrt(v) for v in band_mse),
            mae=_ratio(float(sums["absolute"].sum()), pixels * self.num_bands),
            rmse=math.sqrt(mse),
            psnr=_psnr(mse),
            ssim=_ratio(float(sums["ssim"]), float(sums["images"])),
            sam=_ratio(float(sums["angle"]), pixels),
            pixels=int(pixels),
            images=int(sums["images"]),
        )
        logger.debug("scored %d pixels and %d whole dates", scores.pixels, scores.images)
        return scores

    def reset(self) -> None:
        self.sums.reset()

    def forward(self, prediction: Tensor, truth: Tensor, mask: Tensor) -> None:
        """Same as :meth:`update`."""
        self.update(prediction, truth, mask)


def scores_table(scores: Mapping[str, GapFillScores]) -> str:
    """Markdown table, one row per method: MAE, RMSE (reflectance), PSNR, SSIM, SAM, per-band RMSE."""
    if not scores:
        raise ValueError("scores is empty: no method to tabulate")
    bands = next(iter(scores.values())).band_names
    for method, score in scores.items():
        if score.band_names != bands:
            raise ValueError(f"scores of {method!r} have bands {score.band_names}, others {bands}")
    header = ["method", "MAE", "RMSE", "PSNR (dB)", "SSIM", "SAM (°)", *(f"RMSE {b}" for b in bands)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for method, s in scores.items():
        cells = [
            method,
            f"{s.mae:.4f}",
            f"{s.rmse:.4f}",
            f"{s.psnr:.2f}",
            f"{s.ssim:.4f}",
            f"{s.sam:.2f}",
            *(f"{v:.4f}" for v in s.band_rmse),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
