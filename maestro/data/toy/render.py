"""Every modality of one toy patch rendered from its scene, so that the sensors agree."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from maestro.data.toy.classes import LC_SURFACES, LPIS_HIERARCHY
from maestro.data.toy.grid import RES, SIZE, block_mean, box_blur, coordinates, smooth_noise
from maestro.data.toy.scene import Scene
from maestro.data.toy.spectra import AERIAL_FROM_S2, PROFILES, S2_BANDS, SPECTRA, TINTS, canopy_spectrum
from maestro.datasets import DEFAULT_DATASET, get_dataset
from maestro.modalities import MODALITIES

_CLOUD_STATES = {"clear": 0.65, "partly": 0.2, "overcast": 0.15}
_SAR_LOOKS = 5.0
"""Equivalent number of looks of the speckle (multilooked GRD at 10 m)."""
_SAR_ORBIT_OFFSET_DB = {"s1_asc": 0.0, "s1_des": -0.7}
"""Descending passes see the scene at another incidence: a small constant offset."""


@dataclass(frozen=True)
class Terrain:
    """Smooth terrain of one ROI as a sum of plane waves in world coordinates (continuous across patches)."""

    base: float
    amplitude: np.ndarray
    wavevector: np.ndarray
    """(waves, 2) radians per metre along x and y."""
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Terrain:
        waves = 4
        wavelength = rng.uniform(150.0, 2000.0, waves)
        direction = rng.uniform(0.0, 2 * math.pi, waves)
        k = 2 * math.pi / wavelength
        return cls(
            base=float(rng.uniform(20.0, 1400.0)),
            amplitude=rng.uniform(0.5, 1.0, waves) * wavelength / 100.0,
            wavevector=np.stack([k * np.cos(direction), k * np.sin(direction)], axis=1),
            phase=rng.uniform(0.0, 2 * math.pi, waves),
        )

    def elevation(self, left: float, top: float) -> np.ndarray:
        """DTM of the patch at pixel centres; each wave is separable (sin(a + b) expansion)."""
        offsets = (np.arange(SIZE) + 0.5) * RES
        x, y = left + offsets, top - offsets
        out = np.full((SIZE, SIZE), self.base, dtype=np.float64)
        for amp, (kx, ky), phase in zip(self.amplitude, self.wavevector, self.phase, strict=True):
            a, b = ky * (y - top) + kx * left + phase, kx * (x - left)
            out += amp * (np.sin(a)[:, None] * np.cos(b)[None, :] + np.cos(a)[:, None] * np.sin(b)[None, :])
        return out.astype(np.float32)


class Renderer:
    """Every modality of one patch, derived from the same scene so that sensors agree.

    Products are computed lazily and cached: S2 and its cloud mask come out of one simulation,
    SPOT and historical imagery reuse the aerial reflectance.
    """

    def __init__(self, scene: Scene, terrain: Terrain, doys: Mapping[str, np.ndarray], regional_shift: float):
        self.scene = scene
        self.rng = scene.rng
        self.terrain = terrain
        self.doys = doys
        self.regional_shift = regional_shift
        self.lc_of = np.asarray(scene.lc, dtype=np.uint8)
        self._cache: dict[str, object] = {}

    def _cached(self, name: str, make: Callable[[], object]) -> object:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    # -- surfaces -------------------------------------------------------------------------
    def vegetation(self, doy: np.ndarray, *, seen_by_aerial: bool = False) -> np.ndarray:
        """(K, T) vegetation fraction of every component at the given days.

        The aerial view uses the land-cover profile of a parcel (most crops look alike from above
        on one date), the Sentinels use the crop's own phenology.
        """
        scene = self.scene
        out = np.empty((scene.size, len(doy)), dtype=np.float32)
        for k in range(scene.size):
            profile = LC_SURFACES[scene.lc[k]].profile if seen_by_aerial else scene.profile[k]
            days, values = zip(*PROFILES[profile], strict=True)
            shifted = doy - scene.shift[k] - self.regional_shift
            out[k] = np.interp(shifted, days, values, period=365)
        return np.clip(out * np.asarray(scene.vigour, dtype=np.float32)[:, None], 0.0, 1.0)

    def reflectance(self, doy: np.ndarray, *, seen_by_aerial: bool = False) -> np.ndarray:
        """(K, T, 10) Sentinel-2 reflectance of every component: vegetation over its material."""
        scene = self.scene
        veg = self.vegetation(doy, seen_by_aerial=seen_by_aerial)[..., None]
        material = np.array([SPECTRA[m] for m in scene.material], dtype=np.float32)[:, None, :]
        material = material * np.asarray(scene.brightness, dtype=np.float32)[:, None, None]
        profiles = [LC_SURFACES[lc].profile for lc in scene.lc] if seen_by_aerial else scene.profile
        canopy = np.stack([canopy_spectrum(p) for p in profiles])[:, None, :]
        out = veg * canopy + (1 - veg) * material
        if not seen_by_aerial:
            out += self._tints(doy)
        return out

    def _tints(self, doy: np.ndarray) -> np.ndarray:
        tint = np.zeros((self.scene.size, len(doy), len(S2_BANDS)), dtype=np.float32)
        for k, profile in enumerate(self.scene.profile):
            if profile in TINTS:
                first, last, delta = TINTS[profile]
                days = doy - self.scene.shift[k] - self.regional_shift
                tint[k, (days >= first) & (days <= last)] = delta
        return tint

    # -- geometry ---------------------------------------------------------------------------
    def height(self) -> np.ndarray:
        """Height above ground (m) from each component's relief type."""

        def make() -> np.ndarray:
            scene, rng = self.scene, self.rng
            comp = scene.component
            per_comp = np.asarray(scene.height, dtype=np.float32)[comp]
            relief = np.array([LC_SURFACES[lc].relief for lc in scene.lc])[comp]
            crowns = np.clip(0.6 + 0.7 * smooth_noise(rng, 12) + 0.3 * smooth_noise(rng, 4), 0.0, 1.0)
            u, _ = coordinates(scene.angle)
            rows = (np.sin(2 * np.pi * u / 2.2) > 0.2).astype(np.float32)
            shape = np.where(relief == "crowns", np.sqrt(crowns), 1.0)
            shape = np.where(relief == "rows", rows, shape)
            shape = np.where(relief == "ground", 0.3 + 0.7 * np.clip(smooth_noise(rng, 8), 0, 1), shape)
            return per_comp * shape + np.float32(0.03) * rng.standard_normal(comp.shape, dtype=np.float32)

        return self._cached("height", make)  # type: ignore[return-value]

    def dem(self) -> np.ndarray:
        left, top = self.scene.plan.origin
        dtm = self.terrain.elevation(left, top)
        dsm = dtm + np.maximum(self.height(), 0.0)
        # Quantised to 1/32 m: the float mantissa then ends in zeros, which DEFLATE compresses well.
        return (np.round(np.stack([dsm, dtm]) * 32.0) / 32.0).astype(np.float32)

    # -- aerial family ----------------------------------------------------------------------
    def aerial_reflectance(self) -> np.ndarray:
        """(4, 512, 512) R, G, B, NIR surface reflectance at the aerial date, textured and shaded."""

        def make() -> np.ndarray:
            scene, rng = self.scene, self.rng
            doy = self.doys["AERIAL"]
            spectra = self.reflectance(doy, seen_by_aerial=True)[:, 0, AERIAL_FROM_S2]  # (K, 4)
            comp = scene.component
            texture_weights = np.array([LC_SURFACES[lc].texture for lc in scene.lc], dtype=np.float32)[comp]
            octaves = [rng.standard_normal(comp.shape, dtype=np.float32)] + [
                smooth_noise(rng, scale) for scale in (4, 16, 64)
            ]
            texture = sum(texture_weights[..., i] * octave for i, octave in enumerate(octaves))
            u, _ = coordinates(scene.angle)
            row_strength = np.array([LC_SURFACES[lc].rows for lc in scene.lc], dtype=np.float32)[comp]
            texture = texture + row_strength * np.sin(2 * np.pi * u / 2.2)
            image = spectra[comp].transpose(2, 0, 1) * (1.0 + texture) * self._shading()
            return np.clip(image, 0.0, 1.0)

        return self._cached("aerial_reflectance", make)  # type: ignore[return-value]

    def _shading(self) -> np.ndarray:
        """Sun from the south-east: slopes of the surface (trees, roofs) facing it are brighter."""
        gy, gx = np.gradient(self.height() / np.float32(RES))
        return np.clip(1.0 + 0.25 * np.clip(gx - gy, -2.0, 2.0), 0.4, 1.5).astype(np.float32)

    def aerial(self) -> np.ndarray:
        gain = self.rng.uniform(0.92, 1.08, size=(4, 1, 1)).astype(np.float32)
        stretched = np.clip(self.aerial_reflectance() * gain / 0.45, 0.0, 1.0) ** 0.6 * 255.0
        noisy = stretched + np.float32(1.5) * self.rng.standard_normal(stretched.shape, dtype=np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def spot(self) -> np.ndarray:
        factor = SIZE // MODALITIES["spot"].size_px
        reflectance = block_mean(self.aerial_reflectance(), factor)
        atmosphere = np.array([0.015, 0.02, 0.03, 0.01], dtype=np.float32)[:, None, None]
        values = (reflectance * 0.9 + atmosphere) * 1e4 + self.rng.normal(0.0, 30.0, reflectance.shape)
        return np.clip(np.rint(values), 0, 65535).astype(np.uint16)

    def hist(self) -> np.ndarray:
        """1950s look: panchromatic, half resolution, blurred, low contrast, grainy, vignetted."""
        size = MODALITIES["hist"].size_px
        r, g, b, _ = self.aerial_reflectance()
        pan = block_mean(0.3 * r + 0.45 * g + 0.25 * b, SIZE // size)
        pan = box_blur(pan, 1)
        ramp = (np.arange(size, dtype=np.float32) - size / 2) / size
        vignette = 1.0 - 0.6 * (ramp[:, None] ** 2 + ramp[None, :] ** 2)
        tone = np.clip(pan / 0.3, 0.0, 1.0) ** 0.8 * 190.0 * vignette + float(self.rng.uniform(20.0, 50.0))
        grain = self.rng.normal(0.0, 6.0, tone.shape)
        return np.clip(np.rint(tone + grain), 0, 255).astype(np.uint8)[None]

    # -- labels -----------------------------------------------------------------------------
    def lc(self) -> np.ndarray:
        return self.lc_of[self.scene.component][None]

    def lpis(self) -> np.ndarray:
        crop = np.asarray(self.scene.crop, dtype=np.int64)[self.scene.component]
        return LPIS_HIERARCHY[crop].transpose(2, 0, 1).copy()

    # -- Sentinels ----------------------------------------------------------------------------
    def _fractions(self, size: int) -> np.ndarray:
        """(size*size, K) share of each component in every coarse pixel (exact area weighting)."""
        comp = self.scene.component
        index = (np.arange(SIZE) * size) // SIZE
        pixel = (index[:, None] * size + index[None, :]).ravel()
        counts = np.bincount(pixel * self.scene.size + comp.ravel(), minlength=size * size * self.scene.size)
        counts = counts.reshape(size * size, self.scene.size).astype(np.float32)
        return counts / counts.sum(axis=1, keepdims=True)

    def sentinel2(self) -> tuple[np.ndarray, np.ndarray]:
        """(T, 10, H, W) uint16 reflectance x 1e4 and (T, 2, H, W) snow / cloud probability."""

        def make() -> tuple[np.ndarray, np.ndarray]:
            rng, size = self.rng, MODALITIES["s2"].size_px
            doy = self.doys["SENTINEL2"]
            series = self.reflectance(doy)  # (K, T, 10)
            pixels = np.einsum("pk,ktb->tbp", self._fractions(size), series).reshape(len(doy), -1, size, size)
            pixels = pixels * rng.normal(1.0, 0.03, pixels.shape) + rng.normal(0.0, 0.004, pixels.shape)
            snow = self._snow_probability(doy, size)
            cloud = self._cloud_probability(len(doy), size)
            pixels = self._overlay(pixels, snow, "snow")
            pixels = self._overlay(pixels, cloud, "cloud")
            image = np.clip(np.rint(pixels * 1e4), 1, 65535).astype(np.uint16)
            mask = np.stack([snow, cloud], axis=1).astype(np.uint16)
            return image, mask

        return self._cached("sentinel2", make)  # type: ignore[return-value]

    def _cloud_probability(self, dates: int, size: int) -> np.ndarray:
        """(T, H, W) 0..100: clear, partly cloudy (a smooth blob) or overcast dates."""
        rng = self.rng
        out = np.zeros((dates, size, size), dtype=np.float32)
        states = rng.choice(list(_CLOUD_STATES), size=dates, p=list(_CLOUD_STATES.values()))
        for t, state in enumerate(states):
            if state == "partly":
                blob = smooth_noise(rng, 4, size) + float(rng.uniform(-1.0, 0.5))
                out[t] = np.clip(blob * 120.0, 0.0, 100.0)
            elif state == "overcast":
                out[t] = rng.uniform(80.0, 100.0, (size, size))
        return np.rint(out)

    def _snow_probability(self, doy: np.ndarray, size: int) -> np.ndarray:
        """Rare snow: winter dates only, likelier in the mountains."""
        rng = self.rng
        chance = 0.05 + (0.35 if self.terrain.base > 900 else 0.0)
        winter = (doy < 60) | (doy > 335)
        out = np.zeros((len(doy), size, size), dtype=np.float32)
        for t in np.flatnonzero(winter & (rng.random(len(doy)) < chance)):
            out[t] = np.clip((smooth_noise(rng, 5, size) + 0.8) * 100.0, 0.0, 100.0)
        return np.rint(out)

    @staticmethod
    def _overlay(pixels: np.ndarray, probability: np.ndarray, spectrum: str) -> np.ndarray:
        """Mix the surface with a bright spectrum in proportion to the flagged probability."""
        alpha = (probability / 100.0)[:, None]
        return (1 - alpha) * pixels + alpha * np.asarray(SPECTRA[spectrum], dtype=np.float32)[
            None, :, None, None
        ]

    def sentinel1(self, key: str) -> np.ndarray:
        """(T, 2, H, W) float32 VV, VH sigma0 (linear): vegetation raises VH, speckle multiplies."""
        rng, size = self.rng, MODALITIES[key].size_px
        doy = self.doys[MODALITIES[key].dates_table]
        veg = self.vegetation(doy)  # (K, T)
        base = np.array([LC_SURFACES[lc].sar for lc in self.scene.lc], dtype=np.float32)  # (K, 2)
        gain = np.array([5.0, 9.0], dtype=np.float32)
        decibels = base[:, None, :] + veg[..., None] * gain + _SAR_ORBIT_OFFSET_DB[key]
        decibels += rng.normal(0.0, 0.7, (1, len(doy), 1)).astype(np.float32)  # soil moisture of the day
        linear = np.power(np.float32(10.0), decibels / 10.0)  # (K, T, 2)
        pixels = np.einsum("pk,ktb->tbp", self._fractions(size), linear).reshape(len(doy), 2, size, size)
        speckle = rng.gamma(_SAR_LOOKS, 1.0 / _SAR_LOOKS, pixels.shape)
        return np.clip(pixels * speckle, 1e-4, 2.0).astype(np.float32)


PRODUCTS: dict[str, Callable[[Renderer], np.ndarray]] = {
    "aerial": Renderer.aerial,
    "dem": Renderer.dem,
    "spot": Renderer.spot,
    "s2": lambda r: r.sentinel2()[0],
    "s2_mask": lambda r: r.sentinel2()[1],
    "s1_asc": lambda r: r.sentinel1("s1_asc"),
    "s1_des": lambda r: r.sentinel1("s1_des"),
    "hist": Renderer.hist,
    "lc": Renderer.lc,
    "lpis": Renderer.lpis,
}
"""How the toy simulates each FLAIR-HUB modality; every modality of its dataset row must be here."""
assert set(PRODUCTS) == set(get_dataset(DEFAULT_DATASET).modalities), (
    "the toy dataset must simulate every FLAIR-HUB modality of the registry"
)
