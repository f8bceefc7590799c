"""The latent 0.2 m grid of a toy patch and the few image operations the simulation needs."""

from __future__ import annotations

import functools
import math

import numpy as np

from maestro.data.layout import PATCH_SIZE_M

SIZE = 512
"""Side of the latent scene grid: the finest native resolution of the registry (0.2 m)."""
RES = PATCH_SIZE_M / SIZE


@functools.cache
def _interp_weights(coarse: int, fine: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour index and its fractional distance, for linear upsampling coarse -> fine."""
    positions = (np.arange(fine) + 0.5) / fine * (coarse - 1)
    low = np.minimum(np.floor(positions).astype(np.intp), coarse - 2)
    return low, (positions - low).astype(np.float32)


def smooth_noise(rng: np.random.Generator, scale_px: int, size: int = SIZE) -> np.ndarray:
    """Zero-mean, unit-ish noise with features of about ``scale_px`` pixels (bilinear upsampling)."""
    coarse = size // scale_px + 2
    grid = rng.standard_normal((coarse, coarse), dtype=np.float32)
    low, frac = _interp_weights(coarse, size)
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac) + rows[:, low + 1] * frac


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur with edge padding (no SciPy needed for one small blur)."""
    padded = np.pad(image, radius, mode="edge").astype(np.float32)
    width = 2 * radius + 1
    for axis in (0, 1):
        cumsum = np.cumsum(padded, axis=axis)
        cumsum = np.concatenate([np.zeros_like(np.take(cumsum, [0], axis=axis)), cumsum], axis=axis)
        upper = np.take(cumsum, np.arange(width, cumsum.shape[axis]), axis=axis)
        lower = np.take(cumsum, np.arange(0, cumsum.shape[axis] - width), axis=axis)
        padded = (upper - lower) / width
    return padded


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes."""
    *lead, h, w = image.shape
    return image.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def coordinates(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric coordinates (u, v) of every pixel centre, rotated by ``angle``, centred on the patch."""
    centre = (np.arange(SIZE, dtype=np.float32) + 0.5) * RES - PATCH_SIZE_M / 2
    y, x = centre[:, None], centre[None, :]
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return x * c + y * s, -x * s + y * c
