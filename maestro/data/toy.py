"""Built-in toy dataset: a small synthetic FLAIR-HUB tree with learnable, cross-sensor signal.

Real FLAIR-HUB cannot be downloaded on the development machines, so everything downstream (reader,
shards, pretraining, fine-tuning, metrics) is exercised on this dataset instead. It is written in
the *exact* real layout (:mod:`maestro.data.layout`, :mod:`maestro.data.metadata`): georeferenced
Lambert-93 GeoTIFFs for every modality of the registry, GeoPackage date tables and split CSVs,
with train / val / test in different domains like the official split.

The content is simulated from one latent scene per patch so that the sensors agree with each
other and the labels carry the kind of signal the real data has:

* land cover (COSIA) comes from spatially coherent segments (warped Voronoi cells, field grids,
  roads, buildings, pools); every class has its own spectrum, texture and height above ground,
  so aerial imagery + DEM predict it;
* crop parcels (LPIS) are large fields whose class shows mainly in the *phenology* seen by
  Sentinel-2 / Sentinel-1 (each crop has its own green-up / senescence curve), while their aerial
  look is shared by most crops, so a model needs the time series for LPIS;
* Sentinel-2 has a variable number of dates, clouds (flagged in the mask, bright reflectance)
  and rare snow; Sentinel-1 is speckled sigma0 following vegetation; SPOT is the aerial
  reflectance at 1.6 m; historical imagery is a blurred, grainy panchromatic version.

Generation is deterministic for a seed: each patch draws from ``default_rng((seed, 0, index))`` and
each ROI's terrain from ``default_rng((seed, 1, roi))``.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from tqdm import tqdm

from maestro.data.layout import CRS, PATCH_SIZE_M, PatchId, dates_table_path, raster_relpath, split_csv_path
from maestro.data.metadata import write_dates_table
from maestro.labels import LABEL_SETS
from maestro.modalities import MODALITIES, Modality

log = logging.getLogger(__name__)

SPLIT_NAME = "split_flairhub"
"""The split folder the toy dataset writes (the official FLAIR-HUB split's name)."""

SPLIT_DOMAINS: dict[str, tuple[str, ...]] = {
    "train": ("D001-2021", "D002-2021", "D003-2022", "D004-2022"),
    "val": ("D005-2021",),
    "test": ("D006-2022",),
}
"""Domains of each split: disjoint, as in the official domain-wise split."""

_SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}
_ROIS_PER_DOMAIN = 2
_ROI_PREFIXES = ("AA", "FF", "IW", "UN", "UU", "AB", "KD", "ZS")
_SIZE = 512
"""Side of the latent scene grid: the finest native resolution of the registry (0.2 m)."""
_RES = PATCH_SIZE_M / _SIZE

# ----------------------------------------------------------------------------------- spectra
# Sentinel-2 band order of the registry: B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 (reflectance).
_S2_BANDS = MODALITIES["s2"].bands
_AERIAL_FROM_S2 = [_S2_BANDS.index(b) for b in ("B4", "B3", "B2", "B8")]
"""Aerial / SPOT R, G, B, NIR are the S2 bands B4, B3, B2, B8 of the same surface."""

_SPECTRA: dict[str, tuple[float, ...]] = {
    "veg": (0.030, 0.060, 0.035, 0.100, 0.280, 0.360, 0.400, 0.420, 0.210, 0.100),
    "soil": (0.070, 0.100, 0.130, 0.160, 0.190, 0.210, 0.230, 0.245, 0.320, 0.270),
    "wet_soil": (0.050, 0.070, 0.090, 0.110, 0.130, 0.140, 0.150, 0.160, 0.220, 0.190),
    "forest_floor": (0.020, 0.030, 0.030, 0.040, 0.060, 0.070, 0.080, 0.080, 0.060, 0.040),
    "asphalt": (0.080, 0.090, 0.100, 0.110, 0.120, 0.120, 0.130, 0.130, 0.150, 0.140),
    "gravel": (0.100, 0.130, 0.150, 0.170, 0.200, 0.210, 0.220, 0.230, 0.280, 0.240),
    "tiles": (0.060, 0.080, 0.160, 0.200, 0.220, 0.230, 0.240, 0.250, 0.300, 0.250),
    "slate": (0.120, 0.130, 0.140, 0.150, 0.160, 0.160, 0.170, 0.170, 0.200, 0.180),
    "plastic": (0.300, 0.320, 0.330, 0.330, 0.340, 0.350, 0.360, 0.360, 0.300, 0.250),
    "pool": (0.200, 0.220, 0.100, 0.050, 0.030, 0.020, 0.020, 0.020, 0.010, 0.010),
    "water": (0.050, 0.050, 0.035, 0.025, 0.015, 0.012, 0.010, 0.010, 0.005, 0.003),
    "snow": (0.850, 0.840, 0.820, 0.800, 0.780, 0.760, 0.740, 0.720, 0.100, 0.080),
    "cloud": (0.450, 0.450, 0.460, 0.470, 0.480, 0.480, 0.500, 0.500, 0.350, 0.250),
}

# ----------------------------------------------------------------------------- phenology
# Vegetation fraction over the year as (day of year, fraction) control points, linearly
# interpolated. Crop classes differ by these curves (timing, amplitude, number of cuts).
_PROFILES: dict[str, tuple[tuple[int, float], ...]] = {
    "bare": ((0, 0.05), (365, 0.05)),
    "sparse": ((0, 0.2), (365, 0.2)),
    "evergreen": ((0, 0.85), (365, 0.85)),
    "shrub": ((0, 0.45), (100, 0.5), (160, 0.7), (280, 0.6), (365, 0.45)),
    "deciduous": ((0, 0.3), (95, 0.32), (130, 0.85), (270, 0.85), (310, 0.4), (365, 0.3)),
    "grassland": ((0, 0.55), (80, 0.65), (130, 0.85), (160, 0.6), (190, 0.75), (230, 0.6), (280, 0.75),
                  (365, 0.55)),
    "grass_mixture": ((0, 0.6), (90, 0.7), (140, 0.9), (175, 0.55), (210, 0.7), (260, 0.6), (300, 0.7),
                      (365, 0.6)),
    "winter_cereal": ((0, 0.3), (50, 0.35), (110, 0.8), (150, 0.85), (185, 0.3), (200, 0.12), (280, 0.1),
                      (300, 0.2), (365, 0.3)),
    "spring_cereal": ((0, 0.1), (70, 0.1), (100, 0.2), (150, 0.8), (180, 0.7), (210, 0.15), (365, 0.1)),
    "maize": ((0, 0.1), (130, 0.1), (165, 0.3), (200, 0.85), (240, 0.8), (275, 0.3), (290, 0.12), (365, 0.1)),
    "sorghum": ((0, 0.1), (160, 0.1), (195, 0.3), (230, 0.65), (270, 0.6), (300, 0.2), (315, 0.1), (365, 0.1)),
    "rice": ((0, 0.1), (120, 0.1), (150, 0.25), (200, 0.8), (250, 0.6), (270, 0.2), (365, 0.1)),
    "flax": ((0, 0.1), (75, 0.1), (110, 0.5), (140, 0.8), (175, 0.5), (195, 0.15), (365, 0.1)),
    "hemp": ((0, 0.1), (120, 0.1), (150, 0.5), (190, 0.9), (230, 0.8), (250, 0.2), (365, 0.1)),
    "sunflower": ((0, 0.1), (120, 0.1), (150, 0.3), (185, 0.75), (215, 0.65), (245, 0.25), (260, 0.12), (365, 0.1)),
    "rapeseed": ((0, 0.55), (60, 0.6), (100, 0.85), (130, 0.8), (170, 0.4), (190, 0.12), (240, 0.15), (260, 0.4),
                 (365, 0.55)),
    "soy": ((0, 0.1), (135, 0.1), (170, 0.4), (210, 0.85), (245, 0.6), (270, 0.15), (365, 0.1)),
    "spring_protein": ((0, 0.1), (60, 0.1), (90, 0.3), (130, 0.8), (165, 0.3), (180, 0.12), (365, 0.1)),
    "winter_protein": ((0, 0.25), (40, 0.3), (95, 0.75), (135, 0.8), (165, 0.25), (180, 0.1), (290, 0.1),
                       (310, 0.2), (365, 0.25)),
    "fodder_legume": ((0, 0.5), (80, 0.6), (130, 0.85), (145, 0.35), (180, 0.8), (195, 0.35), (230, 0.75),
                      (245, 0.4), (290, 0.6), (365, 0.5)),
    "beet": ((0, 0.1), (100, 0.1), (140, 0.3), (180, 0.85), (260, 0.85), (290, 0.3), (300, 0.1), (365, 0.1)),
    "potato": ((0, 0.1), (100, 0.1), (130, 0.3), (165, 0.85), (200, 0.7), (225, 0.15), (365, 0.1)),
    "vegetables": ((0, 0.2), (80, 0.2), (110, 0.6), (140, 0.3), (170, 0.7), (200, 0.3), (240, 0.6), (280, 0.25),
                   (365, 0.2)),
    "fallow": ((0, 0.35), (90, 0.5), (140, 0.7), (200, 0.45), (260, 0.4), (365, 0.35)),
    "vineyard": ((0, 0.15), (110, 0.18), (150, 0.4), (190, 0.6), (250, 0.55), (300, 0.3), (330, 0.15), (365, 0.15)),
    "orchard": ((0, 0.35), (90, 0.4), (120, 0.7), (250, 0.75), (300, 0.5), (330, 0.35), (365, 0.35)),
    "olive": ((0, 0.38), (150, 0.42), (250, 0.4), (365, 0.38)),
    "catch_oilseed": ((0, 0.15), (200, 0.1), (230, 0.4), (270, 0.8), (320, 0.6), (345, 0.3), (365, 0.15)),
    "lavandin": ((0, 0.3), (120, 0.35), (170, 0.55), (200, 0.4), (210, 0.25), (365, 0.3)),
}

_CANOPY: dict[str, tuple[float, float, float]] = {
    # Canopy structure and water content: gains on the vegetation spectrum's red edge (B5, B6),
    # near infrared (B7, B8, B8A) and short-wave infrared (B11, B12). Profiles not listed: 1, 1, 1.
    "grassland": (0.95, 0.95, 1.15), "grass_mixture": (1.0, 1.0, 1.15), "winter_cereal": (1.0, 0.95, 0.9),
    "spring_cereal": (0.95, 0.9, 0.95), "maize": (1.1, 1.15, 0.75), "sorghum": (1.05, 1.1, 0.8),
    "rice": (1.0, 0.9, 0.6), "flax": (0.9, 0.85, 1.1), "hemp": (1.15, 1.2, 0.9), "sunflower": (1.2, 1.25, 1.05),
    "rapeseed": (1.1, 1.1, 1.2), "soy": (0.9, 1.0, 0.85), "spring_protein": (0.95, 0.9, 1.15),
    "winter_protein": (0.9, 0.9, 1.1), "fodder_legume": (1.2, 1.25, 0.9), "beet": (1.25, 1.3, 0.9),
    "potato": (1.15, 1.2, 1.15), "vegetables": (0.95, 0.9, 1.2), "fallow": (0.9, 0.85, 1.25),
    "vineyard": (1.0, 0.95, 1.1), "orchard": (1.0, 1.05, 0.95), "olive": (0.85, 0.8, 0.85),
    "lavandin": (0.85, 0.8, 1.3), "catch_oilseed": (1.05, 1.1, 1.1),
}
_CANOPY_BANDS = (("B5", "B6"), ("B7", "B8", "B8A"), ("B11", "B12"))


def _canopy_spectrum(profile: str) -> np.ndarray:
    """The vegetation spectrum of one phenology profile (crops differ in structure, not only timing)."""
    spectrum = np.array(_SPECTRA["veg"], dtype=np.float32)
    for gain, bands in zip(_CANOPY.get(profile, (1.0, 1.0, 1.0)), _CANOPY_BANDS, strict=True):
        spectrum[[_S2_BANDS.index(b) for b in bands]] *= gain
    return spectrum


_TINTS: dict[str, tuple[int, int, tuple[float, ...]]] = {
    # Flowering changes the colour, not only the greenness: (first day, last day, reflectance delta).
    "rapeseed": (95, 130, (-0.01, 0.08, 0.06, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    "sunflower": (185, 212, (-0.01, 0.05, 0.04, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    "lavandin": (165, 200, (0.04, -0.01, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
}


# --------------------------------------------------------------------------- land cover
@dataclass(frozen=True)
class Surface:
    """How one land-cover class looks to every sensor."""

    material: str
    """Spectrum of the non-vegetated part (key of the spectra table)."""
    profile: str
    """Vegetation fraction over the year (key of the phenology table)."""
    height: tuple[float, float]
    """Range of the height above ground (m) of a segment of this class."""
    relief: str
    """Shape of the height: 'flat' (roofs), 'crowns' (trees), 'rows' (vine rows), 'ground'."""
    texture: tuple[float, float, float, float]
    """Aerial reflectance modulation at 0.2 m, 0.8 m, 3.2 m and 12.8 m scales."""
    sar: tuple[float, float] = (-15.0, -25.0)
    """VV, VH backscatter (dB) of the bare surface; vegetation adds to it."""
    rows: float = 0.0
    """Strength of periodic rows (vines, tractor lines) in the aerial image."""


_LC_SURFACES: tuple[Surface, ...] = (
    Surface("tiles", "bare", (4.0, 14.0), "flat", (0.02, 0.03, 0.0, 0.02), sar=(-3.0, -12.0)),  # building
    Surface("plastic", "bare", (2.5, 4.0), "flat", (0.02, 0.02, 0.02, 0.0), sar=(-6.0, -16.0)),  # greenhouse
    Surface("pool", "bare", (0.0, 0.0), "ground", (0.02, 0.01, 0.01, 0.0), sar=(-20.0, -28.0)),  # swimming pool
    Surface("asphalt", "bare", (0.0, 0.1), "ground", (0.06, 0.04, 0.05, 0.05), sar=(-12.0, -22.0)),  # impervious
    Surface("gravel", "sparse", (0.0, 0.3), "ground", (0.10, 0.06, 0.06, 0.05), sar=(-13.0, -23.0)),  # pervious
    Surface("soil", "bare", (0.0, 0.2), "ground", (0.10, 0.08, 0.06, 0.08), sar=(-14.0, -24.0)),  # bare soil
    Surface("water", "bare", (0.0, 0.0), "ground", (0.01, 0.01, 0.02, 0.03), sar=(-22.0, -29.0)),  # water
    Surface("snow", "bare", (0.0, 0.5), "ground", (0.02, 0.02, 0.03, 0.04), sar=(-16.0, -26.0)),  # snow
    Surface("soil", "grassland", (0.1, 0.5), "ground", (0.08, 0.06, 0.08, 0.10)),  # herbaceous vegetation
    Surface("soil", "fallow", (0.0, 0.8), "ground", (0.05, 0.04, 0.03, 0.08), rows=0.04),  # agricultural land
    Surface("wet_soil", "bare", (0.0, 0.2), "ground", (0.14, 0.05, 0.03, 0.05), rows=0.10),  # plowed land
    Surface("soil", "vineyard", (1.2, 1.8), "rows", (0.06, 0.04, 0.03, 0.04), rows=0.25),  # vineyard
    Surface("forest_floor", "deciduous", (8.0, 25.0), "crowns", (0.12, 0.18, 0.10, 0.05), sar=(-9.0, -16.0)),
    Surface("forest_floor", "evergreen", (10.0, 30.0), "crowns", (0.18, 0.20, 0.06, 0.04), sar=(-9.0, -15.0)),
    Surface("soil", "shrub", (1.0, 4.0), "crowns", (0.12, 0.14, 0.08, 0.06), sar=(-11.0, -19.0)),  # brushwood
    Surface("soil", "sparse", (0.0, 1.0), "ground", (0.14, 0.10, 0.08, 0.06)),  # clear cut
    Surface("soil", "shrub", (1.0, 6.0), "crowns", (0.12, 0.12, 0.08, 0.05)),  # ligneous
    Surface("gravel", "fallow", (0.0, 3.0), "crowns", (0.12, 0.10, 0.08, 0.06)),  # mixed
    Surface("soil", "sparse", (0.0, 0.5), "ground", (0.10, 0.08, 0.08, 0.08)),  # undefined
)
"""One entry per COSIA value 0..18, in label order."""

_LC_NAMES = LABEL_SETS["lc"].level(1).names
_LC = {name: value for value, name in enumerate(_LC_NAMES)}
assert len(_LC_SURFACES) == len(_LC_NAMES)


# ----------------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class Crop:
    """One LPIS level-3 class, its parents at levels 2 and 1, and how it grows."""

    level3: str
    level2: str
    level1: str
    profile: str
    shift: int
    """Days added to the profile's timing (e.g. barley is earlier than wheat)."""
    weight: float
    """Relative frequency among declared parcels."""
    look: str = "field"
    """Aerial land cover: 'field' (agricultural or plowed land, shared by most crops) or a COSIA name."""


_CROPS: tuple[Crop, ...] = (
    Crop("grasses monoculture", "grasses", "grasses", "grassland", 0, 10.0, "herbaceous vegetation"),
    Crop("grasses mixture", "grasses", "grasses", "grass_mixture", 0, 8.0, "herbaceous vegetation"),
    Crop("winter wheat", "wheat", "wheat", "winter_cereal", 0, 12.0),
    Crop("spring wheat", "wheat", "wheat", "spring_cereal", 5, 1.5),
    Crop("winter barley", "barley", "barley", "winter_cereal", -14, 6.0),
    Crop("spring barley", "barley", "barley", "spring_cereal", -6, 3.0),
    Crop("maize", "maize", "maize", "maize", 0, 10.0),
    Crop("sorghum", "sorghum/millet", "other cereals", "sorghum", 0, 1.0),
    Crop("millet/foxtail millet", "sorghum/millet", "other cereals", "sorghum", 10, 0.5),
    Crop("winter durum wheat", "wheat", "wheat", "winter_cereal", 6, 2.0),
    Crop("winter triticale", "other winter cereals", "other cereals", "winter_cereal", 8, 1.5),
    Crop("winter oat", "other winter cereals", "other cereals", "winter_cereal", 14, 0.7),
    Crop("winter rye", "other winter cereals", "other cereals", "winter_cereal", -8, 0.5),
    Crop("spring oat", "other spring cereals", "other cereals", "spring_cereal", 10, 0.7),
    Crop("other spring cereals", "other spring cereals", "other cereals", "spring_cereal", 15, 0.5),
    Crop("other cereals", "other cereals", "other cereals", "spring_cereal", -15, 0.5),
    Crop("rice", "rice", "rice", "rice", 0, 0.3),
    Crop("hemp/tobacco", "hemp/tobacco", "hemp/flax/tobacco", "hemp", 0, 0.4),
    Crop("fiber flax", "flax", "hemp/flax/tobacco", "flax", 0, 0.8),
    Crop("other flax", "flax", "hemp/flax/tobacco", "flax", 10, 0.3),
    Crop("sunflower", "sunflower", "sunflower", "sunflower", 0, 5.0),
    Crop("rapeseed", "rapeseed", "rapeseed", "rapeseed", 0, 6.0),
    Crop("mustard", "other oilseed crops", "other oilseed crops", "catch_oilseed", 0, 0.5),
    Crop("other oilseed crops", "other oilseed crops", "other oilseed crops", "catch_oilseed", -12, 0.3),
    Crop("soy", "soy", "soy", "soy", 0, 2.0),
    Crop("spring peas", "other protein crops", "other protein crops", "spring_protein", 0, 1.5),
    Crop("winter protein crops", "other protein crops", "other protein crops", "winter_protein", 0, 1.0),
    Crop("other protein crops", "other protein crops", "other protein crops", "spring_protein", 12, 0.5),
    Crop("alfalfa", "alfalfa", "fodder legumes", "fodder_legume", 0, 2.0),
    Crop("clover", "other fodder legumes", "fodder legumes", "fodder_legume", 10, 1.0),
    Crop("other fodder legumes", "other fodder legumes", "fodder legumes", "fodder_legume", -8, 1.0),
    Crop("beetroots", "beetroots", "beetroots", "beet", 0, 1.5),
    Crop("potatoes", "potatoes", "potatoes", "potato", 0, 1.5),
    Crop("fruits and vegetables", "fruits and vegetables", "other arable crops", "vegetables", 0, 1.5),
    Crop("aromatic/medicinal plants", "aromatic/medicinal plants", "other arable crops", "vegetables", 20, 0.5),
    Crop("buckwheat", "other arable crops", "other arable crops", "spring_cereal", 45, 0.3),
    Crop("other arable crops", "other arable crops", "other arable crops", "fallow", 0, 1.0),
    Crop("vineyard", "vineyard", "vineyard", "vineyard", 0, 5.0, "vineyard"),
    Crop("olive groves", "olive groves", "olive groves", "olive", 0, 1.0, "brushwood"),
    Crop("fruit orchards", "fruit orchards", "fruit orchards", "orchard", 0, 1.5, "deciduous"),
    Crop("nut orchards", "nut orchards", "nut orchards", "orchard", 12, 0.8, "deciduous"),
    Crop("lavandin", "lavandin", "other permanent crops", "lavandin", 0, 0.8),
    Crop("berries", "other permanent crops", "other permanent crops", "orchard", -10, 0.4, "brushwood"),
    Crop("other permanent crops", "other permanent crops", "other permanent crops", "shrub", 0, 0.8, "brushwood"),
    Crop("mixed crops", "mixed crops", "mixed crops", "fallow", 0, 2.5),
    Crop("background", "background", "background", "bare", 0, 0.0),
)
"""Level-3 classes in label order with their level-2 / level-1 parents (names of maestro.labels)."""


def _lpis_hierarchy() -> np.ndarray:
    """(46, 3) table: level-3 value -> (level 1, level 2, level 3) values, resolved from the names."""
    levels = LABEL_SETS["lpis"].levels
    assert [c.level3 for c in _CROPS] == list(levels[2].names), "crop table must follow level-3 order"
    return np.array(
        [(levels[0].names.index(c.level1), levels[1].names.index(c.level2), i) for i, c in enumerate(_CROPS)],
        dtype=np.uint8,
    )


LPIS_HIERARCHY: np.ndarray = _lpis_hierarchy()
"""Row = level-3 value; columns = the level-1, level-2 and level-3 values (band order of ``lpis``)."""
_BACKGROUND_L3 = len(_CROPS) - 1
_MIXED_L3 = [c.level3 for c in _CROPS].index("mixed crops")
_CROP_WEIGHTS = np.array([c.weight for c in _CROPS]) / sum(c.weight for c in _CROPS)

# ---------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneType:
    """A kind of landscape: which land cover fills the background and what is stamped on it."""

    name: str
    probability: float
    cover: Mapping[str, float]
    """COSIA class name -> weight for the background segments."""
    segments: tuple[int, int]
    fields: float
    """Fraction of the patch covered by a field grid (0: none, 1: all)."""
    declared: float
    """Probability that a field is a declared LPIS parcel."""
    buildings: tuple[int, int]
    roads: float
    """Probability of a road crossing the patch."""
    pools: tuple[int, int] = (0, 0)
    greenhouses: float = 0.0


_SCENES: tuple[SceneType, ...] = (
    SceneType("urban", 0.12, {"impervious surface": 0.35, "pervious surface": 0.2, "herbaceous vegetation": 0.2,
                              "deciduous": 0.15, "coniferous": 0.03, "bare soil": 0.05, "brushwood": 0.02,
                              "undefined": 0.01},
              (20, 40), 0.0, 0.0, (8, 20), 0.9, pools=(0, 3)),
    SceneType("rural", 0.25, {"herbaceous vegetation": 0.3, "agricultural land": 0.15, "deciduous": 0.15,
                              "brushwood": 0.1, "pervious surface": 0.07, "impervious surface": 0.05,
                              "bare soil": 0.05, "water": 0.05, "plowed land": 0.05, "ligneous": 0.02,
                              "mixed": 0.01},
              (10, 25), 0.5, 0.6, (0, 4), 0.5, pools=(0, 1), greenhouses=0.15),
    SceneType("agricultural", 0.40, {"herbaceous vegetation": 0.4, "brushwood": 0.25, "deciduous": 0.2,
                                     "pervious surface": 0.15},
              (8, 16), 1.0, 0.8, (0, 1), 0.3),
    SceneType("forest", 0.13, {"deciduous": 0.4, "coniferous": 0.35, "brushwood": 0.15, "clear cut": 0.05,
                               "herbaceous vegetation": 0.05},
              (8, 20), 0.0, 0.0, (0, 0), 0.2),
    SceneType("natural", 0.10, {"water": 0.25, "bare soil": 0.15, "snow": 0.04, "herbaceous vegetation": 0.25,
                                "brushwood": 0.2, "coniferous": 0.1, "undefined": 0.01},
              (8, 20), 0.0, 0.0, (0, 0), 0.0),
)
_FIELD_FILL = {"herbaceous vegetation": 0.35, "agricultural land": 0.3, "plowed land": 0.15, "brushwood": 0.1,
               "deciduous": 0.1}
"""Land cover of a field that is not a declared parcel."""
assert math.isclose(sum(s.probability for s in _SCENES), 1.0)

# ----------------------------------------------------------------------------------- dates


@dataclass(frozen=True)
class Acquisitions:
    """How a sensor's dates are drawn within the year: revisit grid and count (or a season)."""

    revisit_days: int
    count: tuple[int, int]
    season: tuple[int, int] = (0, 364)


_ACQUISITIONS: dict[str, Acquisitions] = {
    # keyed by the registry's dates_table names
    "SENTINEL2": Acquisitions(5, (8, 40)),
    "SENTINEL1-ASC": Acquisitions(6, (3, 12)),
    "SENTINEL1-DESC": Acquisitions(6, (3, 12)),
    "AERIAL": Acquisitions(1, (1, 1), season=(100, 260)),
    "SPOT": Acquisitions(1, (1, 1), season=(90, 280)),
}
assert {m.dates_table for m in MODALITIES.values() if m.dates_table} <= set(_ACQUISITIONS)

_CLOUD_STATES = {"clear": 0.65, "partly": 0.2, "overcast": 0.15}
_SAR_LOOKS = 5.0
"""Equivalent number of looks of the speckle (multilooked GRD at 10 m)."""
_SAR_ORBIT_OFFSET_DB = {"s1_asc": 0.0, "s1_des": -0.7}
"""Descending passes see the scene at another incidence: a small constant offset."""


# ------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _PatchPlan:
    index: int
    patch: PatchId
    split: str
    roi_index: int
    year: int
    origin: tuple[float, float]
    """(left, top) of the patch in Lambert-93 metres."""


def _split_sizes(num_patches: int) -> dict[str, int]:
    if num_patches < len(SPLIT_DOMAINS):
        raise ValueError(f"the toy dataset needs at least {len(SPLIT_DOMAINS)} patches, got {num_patches}")
    sizes = {split: max(1, round(fraction * num_patches)) for split, fraction in _SPLIT_FRACTIONS.items()}
    return {"train": num_patches - sum(sizes.values()), **sizes}


def _roi_origin(domain_index: int, roi: int) -> tuple[float, float]:
    """Top-left corner of an ROI on the 102.4 m patch grid, spread over mainland France."""
    tile_x = 3000 + 900 * domain_index + 150 * roi
    tile_y = 65500 - 700 * domain_index - 90 * roi
    return tile_x * PATCH_SIZE_M, tile_y * PATCH_SIZE_M


def _plan_patches(num_patches: int) -> list[_PatchPlan]:
    """Patch ids, splits and positions: each split's patches spread over its domains and ROIs."""
    plans: list[_PatchPlan] = []
    domain_index = 0
    for split, size in _split_sizes(num_patches).items():
        domains = SPLIT_DOMAINS[split]
        per_domain = np.array_split(np.arange(size), len(domains))
        for domain, members in zip(domains, per_domain, strict=True):
            domain_index += 1
            for roi, roi_members in enumerate(np.array_split(members, _ROIS_PER_DOMAIN)):
                roi_name = f"{_ROI_PREFIXES[(domain_index + roi) % len(_ROI_PREFIXES)]}-S1-{roi + 1:02d}"
                columns = max(1, math.ceil(math.sqrt(len(roi_members))))
                x0, y0 = _roi_origin(domain_index, roi)
                for k in range(len(roi_members)):
                    row, col = divmod(k, columns)
                    plans.append(_PatchPlan(
                        index=len(plans), patch=PatchId(domain, roi_name, row, col), split=split,
                        roi_index=domain_index * _ROIS_PER_DOMAIN + roi, year=int(domain.split("-")[1]),
                        origin=(x0 + col * PATCH_SIZE_M, y0 - row * PATCH_SIZE_M),
                    ))
    return plans


def _draw_dates(rng: np.random.Generator, year: int, plan: Acquisitions) -> np.ndarray:
    """Sorted distinct acquisition days (day of year) on the sensor's revisit grid."""
    first, last = plan.season
    slots = np.arange(first + int(rng.integers(plan.revisit_days)), last + 1, plan.revisit_days)
    count = min(int(rng.integers(plan.count[0], plan.count[1] + 1)), len(slots))
    return np.sort(rng.choice(slots, size=count, replace=False))


def _to_yyyymmdd(year: int, doy: np.ndarray) -> np.ndarray:
    days = np.datetime64(f"{year}-01-01") + np.asarray(doy).astype("timedelta64[D]")
    text = np.datetime_as_string(days, unit="D")
    return np.char.replace(text, "-", "").astype(np.int32)


# ---------------------------------------------------------------------------------- noise
@functools.cache
def _interp_weights(coarse: int, fine: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour index and its fractional distance, for linear upsampling coarse -> fine."""
    positions = (np.arange(fine) + 0.5) / fine * (coarse - 1)
    low = np.minimum(np.floor(positions).astype(np.intp), coarse - 2)
    return low, (positions - low).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, scale_px: int, size: int = _SIZE) -> np.ndarray:
    """Zero-mean, unit-ish noise with features of about ``scale_px`` pixels (bilinear upsampling)."""
    coarse = size // scale_px + 2
    grid = rng.standard_normal((coarse, coarse), dtype=np.float32)
    low, frac = _interp_weights(coarse, size)
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac) + rows[:, low + 1] * frac


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
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


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes."""
    *lead, h, w = image.shape
    return image.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


# ---------------------------------------------------------------------------------- scene
@dataclass
class _Scene:
    """The latent world of one patch: components (segments, fields, objects) on the 0.2 m grid."""

    plan: _PatchPlan
    rng: np.random.Generator
    component: np.ndarray
    """(512, 512) int32 component index of every pixel."""
    lc: list[int] = field(default_factory=list)
    crop: list[int] = field(default_factory=list)
    """Level-3 LPIS value per component (background for non-parcels)."""
    profile: list[str] = field(default_factory=list)
    """Phenology seen by Sentinel-2/1 (the crop's own for parcels, the land cover's otherwise)."""
    shift: list[float] = field(default_factory=list)
    height: list[float] = field(default_factory=list)
    material: list[str] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)
    vigour: list[float] = field(default_factory=list)
    """Scale of the vegetation fraction (a parcel grows better or worse than its neighbours)."""
    angle: float = 0.0
    """Orientation of fields, rows and buildings (radians)."""

    def add(self, lc: int, crop: int = _BACKGROUND_L3, profile: str | None = None, shift: float = 0.0) -> int:
        """Register a component with per-component random height, brightness and timing jitter."""
        surface = _LC_SURFACES[lc]
        material = surface.material
        if lc == _LC["building"]:
            material = "tiles" if self.rng.random() < 0.6 else "slate"
        self.lc.append(lc)
        self.crop.append(crop)
        self.profile.append(profile or surface.profile)
        self.shift.append(shift + float(self.rng.normal(0.0, 5.0)))
        self.height.append(float(self.rng.uniform(*surface.height)))
        self.material.append(material)
        self.brightness.append(float(self.rng.uniform(0.85, 1.15)))
        self.vigour.append(float(self.rng.uniform(0.9, 1.1)))
        return len(self.lc) - 1

    @property
    def size(self) -> int:
        return len(self.lc)


def _choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _coordinates(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric coordinates (u, v) of every pixel centre, rotated by ``angle``, centred on the patch."""
    centre = (np.arange(_SIZE, dtype=np.float32) + 0.5) * _RES - PATCH_SIZE_M / 2
    y, x = centre[:, None], centre[None, :]
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return x * c + y * s, -x * s + y * c


def _voronoi(rng: np.random.Generator, count: int) -> np.ndarray:
    """Organic segments: Voronoi cells of warped coordinates, computed at 0.4 m and upsampled."""
    half = _SIZE // 2
    axis = np.arange(half, dtype=np.float32)
    warp = 6.0
    yy = axis[:, None] + warp * _smooth_noise(rng, 32, half)
    xx = axis[None, :] + warp * _smooth_noise(rng, 32, half)
    seeds = rng.uniform(0, half, size=(count, 2)).astype(np.float32)
    distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cells = distance.argmin(axis=-1).astype(np.int32)
    return cells.repeat(2, axis=0).repeat(2, axis=1)


def _background(scene: _Scene, kind: SceneType) -> None:
    count = int(scene.rng.integers(kind.segments[0], kind.segments[1] + 1))
    cells = _voronoi(scene.rng, count)
    for _ in range(count):
        scene.add(_LC[_choice(scene.rng, kind.cover)])
    scene.component = cells


def _fields(scene: _Scene, kind: SceneType, u: np.ndarray, v: np.ndarray) -> None:
    """A grid of fields (strips cut into plots) over part of the patch; some are LPIS parcels."""
    rng = scene.rng
    half = PATCH_SIZE_M * 0.75
    start = -half if kind.fields >= 1 else float(rng.uniform(-0.4, 0.2)) * PATCH_SIZE_M
    hedge = 1.0
    edges_u = [start]
    while edges_u[-1] < half:
        edges_u.append(edges_u[-1] + float(rng.uniform(30.0, 70.0)))
    for lo_u, hi_u in zip(edges_u[:-1], edges_u[1:], strict=True):
        in_strip = (u >= lo_u + hedge) & (u < hi_u - hedge)
        lo_v = -half - float(rng.uniform(0.0, 60.0))
        while lo_v < half:
            hi_v = lo_v + float(rng.uniform(30.0, 90.0))
            mask = in_strip & (v >= lo_v + hedge) & (v < hi_v - hedge)
            scene.component[mask] = _field_component(scene, kind)
            lo_v = hi_v


def _field_component(scene: _Scene, kind: SceneType) -> int:
    rng = scene.rng
    if rng.random() >= kind.declared:
        lc = _LC[_choice(rng, _FIELD_FILL)]
        profile = _CROPS[_draw_crop(rng)].profile if lc == _LC["agricultural land"] else None
        return scene.add(lc, profile=profile)
    crop = _draw_crop(rng)
    spec = _CROPS[crop]
    profile = spec.profile
    if crop == _MIXED_L3:  # an unknown mixture: any phenology
        profile = _CROPS[_draw_crop(rng)].profile
    if spec.look == "field":
        lc = _LC["agricultural land"] if rng.random() < 0.75 else _LC["plowed land"]
    else:
        lc = _LC[spec.look]
    return scene.add(lc, crop=crop, profile=profile, shift=spec.shift)


def _draw_crop(rng: np.random.Generator) -> int:
    return int(rng.choice(len(_CROPS), p=_CROP_WEIGHTS))


def _roads(scene: _Scene, kind: SceneType, u: np.ndarray, v: np.ndarray) -> None:
    rng = scene.rng
    for _ in range(2):
        if rng.random() >= kind.roads:
            continue
        axis = u if rng.random() < 0.5 else v
        centre, width = float(rng.uniform(-40.0, 40.0)), float(rng.uniform(4.0, 8.0))
        scene.component[np.abs(axis - centre) < width / 2] = scene.add(_LC["impervious surface"])


def _rectangles(scene: _Scene, lc: int, count: int, size: tuple[float, float, float, float]) -> None:
    """Stamp rotated rectangles (buildings, pools, greenhouses) of sides in the given ranges (m)."""
    rng = scene.rng
    c, s = math.cos(scene.angle), math.sin(scene.angle)
    for _ in range(count):
        length, width = rng.uniform(size[0], size[1]), rng.uniform(size[2], size[3])
        cy, cx = rng.uniform(0, _SIZE, size=2)
        reach = int(math.hypot(length, width) / 2 / _RES) + 1
        y0, y1 = max(0, int(cy) - reach), min(_SIZE, int(cy) + reach)
        x0, x1 = max(0, int(cx) - reach), min(_SIZE, int(cx) + reach)
        yy = (np.arange(y0, y1)[:, None] + 0.5 - cy) * _RES
        xx = (np.arange(x0, x1)[None, :] + 0.5 - cx) * _RES
        inside = (np.abs(xx * c + yy * s) < length / 2) & (np.abs(-xx * s + yy * c) < width / 2)
        scene.component[y0:y1, x0:x1][inside] = scene.add(lc)


def _build_scene(plan: _PatchPlan, rng: np.random.Generator) -> _Scene:
    """Compose one patch: background segments, then fields, roads, pools and buildings on top."""
    kind = _SCENES[int(rng.choice(len(_SCENES), p=[s.probability for s in _SCENES]))]
    scene = _Scene(plan=plan, rng=rng, component=np.zeros((_SIZE, _SIZE), np.int32))
    scene.angle = float(rng.uniform(0.0, math.pi))
    _background(scene, kind)
    u, v = _coordinates(scene.angle)
    if kind.fields > 0:
        _fields(scene, kind, u, v)
    _roads(scene, kind, u, v)
    _rectangles(scene, _LC["swimming pool"], int(rng.integers(kind.pools[0], kind.pools[1] + 1)), (6, 12, 3, 6))
    if rng.random() < kind.greenhouses:
        _rectangles(scene, _LC["greenhouse"], int(rng.integers(1, 3)), (20, 40, 8, 12))
    _rectangles(scene, _LC["building"], int(rng.integers(kind.buildings[0], kind.buildings[1] + 1)), (8, 25, 6, 14))
    return scene


# ------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class _Terrain:
    """Smooth terrain of one ROI as a sum of plane waves in world coordinates (continuous across patches)."""

    base: float
    amplitude: np.ndarray
    wavevector: np.ndarray
    """(waves, 2) radians per metre along x and y."""
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Terrain:
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
        offsets = (np.arange(_SIZE) + 0.5) * _RES
        x, y = left + offsets, top - offsets
        out = np.full((_SIZE, _SIZE), self.base, dtype=np.float64)
        for amp, (kx, ky), phase in zip(self.amplitude, self.wavevector, self.phase, strict=True):
            a, b = ky * (y - top) + kx * left + phase, kx * (x - left)
            out += amp * (np.sin(a)[:, None] * np.cos(b)[None, :] + np.cos(a)[:, None] * np.sin(b)[None, :])
        return out.astype(np.float32)


class _Renderer:
    """Every modality of one patch, derived from the same scene so that sensors agree.

    Products are computed lazily and cached: S2 and its cloud mask come out of one simulation,
    SPOT and historical imagery reuse the aerial reflectance.
    """

    def __init__(self, scene: _Scene, terrain: _Terrain, doys: Mapping[str, np.ndarray], regional_shift: float):
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
            profile = _LC_SURFACES[scene.lc[k]].profile if seen_by_aerial else scene.profile[k]
            days, values = zip(*_PROFILES[profile], strict=True)
            shifted = doy - scene.shift[k] - self.regional_shift
            out[k] = np.interp(shifted, days, values, period=365)
        return np.clip(out * np.asarray(scene.vigour, dtype=np.float32)[:, None], 0.0, 1.0)

    def reflectance(self, doy: np.ndarray, *, seen_by_aerial: bool = False) -> np.ndarray:
        """(K, T, 10) Sentinel-2 reflectance of every component: vegetation over its material."""
        scene = self.scene
        veg = self.vegetation(doy, seen_by_aerial=seen_by_aerial)[..., None]
        material = np.array([_SPECTRA[m] for m in scene.material], dtype=np.float32)[:, None, :]
        material = material * np.asarray(scene.brightness, dtype=np.float32)[:, None, None]
        profiles = [_LC_SURFACES[lc].profile for lc in scene.lc] if seen_by_aerial else scene.profile
        canopy = np.stack([_canopy_spectrum(p) for p in profiles])[:, None, :]
        out = veg * canopy + (1 - veg) * material
        if not seen_by_aerial:
            out += self._tints(doy)
        return out

    def _tints(self, doy: np.ndarray) -> np.ndarray:
        tint = np.zeros((self.scene.size, len(doy), len(_S2_BANDS)), dtype=np.float32)
        for k, profile in enumerate(self.scene.profile):
            if profile in _TINTS:
                first, last, delta = _TINTS[profile]
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
            relief = np.array([_LC_SURFACES[lc].relief for lc in scene.lc])[comp]
            crowns = np.clip(0.6 + 0.7 * _smooth_noise(rng, 12) + 0.3 * _smooth_noise(rng, 4), 0.0, 1.0)
            u, _ = _coordinates(scene.angle)
            rows = (np.sin(2 * np.pi * u / 2.2) > 0.2).astype(np.float32)
            shape = np.where(relief == "crowns", np.sqrt(crowns), 1.0)
            shape = np.where(relief == "rows", rows, shape)
            shape = np.where(relief == "ground", 0.3 + 0.7 * np.clip(_smooth_noise(rng, 8), 0, 1), shape)
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
            spectra = self.reflectance(doy, seen_by_aerial=True)[:, 0, _AERIAL_FROM_S2]  # (K, 4)
            comp = scene.component
            texture_weights = np.array([_LC_SURFACES[lc].texture for lc in scene.lc], dtype=np.float32)[comp]
            octaves = [rng.standard_normal(comp.shape, dtype=np.float32)] + [
                _smooth_noise(rng, scale) for scale in (4, 16, 64)
            ]
            texture = sum(texture_weights[..., i] * octave for i, octave in enumerate(octaves))
            u, _ = _coordinates(scene.angle)
            row_strength = np.array([_LC_SURFACES[lc].rows for lc in scene.lc], dtype=np.float32)[comp]
            texture = texture + row_strength * np.sin(2 * np.pi * u / 2.2)
            image = spectra[comp].transpose(2, 0, 1) * (1.0 + texture) * self._shading()
            return np.clip(image, 0.0, 1.0)
        return self._cached("aerial_reflectance", make)  # type: ignore[return-value]

    def _shading(self) -> np.ndarray:
        """Sun from the south-east: slopes of the surface (trees, roofs) facing it are brighter."""
        gy, gx = np.gradient(self.height() / np.float32(_RES))
        return np.clip(1.0 + 0.25 * np.clip(gx - gy, -2.0, 2.0), 0.4, 1.5).astype(np.float32)

    def aerial(self) -> np.ndarray:
        gain = self.rng.uniform(0.92, 1.08, size=(4, 1, 1)).astype(np.float32)
        stretched = np.clip(self.aerial_reflectance() * gain / 0.45, 0.0, 1.0) ** 0.6 * 255.0
        noisy = stretched + np.float32(1.5) * self.rng.standard_normal(stretched.shape, dtype=np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def spot(self) -> np.ndarray:
        factor = _SIZE // MODALITIES["spot"].size_px
        reflectance = _block_mean(self.aerial_reflectance(), factor)
        atmosphere = np.array([0.015, 0.02, 0.03, 0.01], dtype=np.float32)[:, None, None]
        values = (reflectance * 0.9 + atmosphere) * 1e4 + self.rng.normal(0.0, 30.0, reflectance.shape)
        return np.clip(np.rint(values), 0, 65535).astype(np.uint16)

    def hist(self) -> np.ndarray:
        """1950s look: panchromatic, half resolution, blurred, low contrast, grainy, vignetted."""
        size = MODALITIES["hist"].size_px
        r, g, b, _ = self.aerial_reflectance()
        pan = _block_mean(0.3 * r + 0.45 * g + 0.25 * b, _SIZE // size)
        pan = _box_blur(pan, 1)
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
        index = (np.arange(_SIZE) * size) // _SIZE
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
                blob = _smooth_noise(rng, 4, size) + float(rng.uniform(-1.0, 0.5))
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
            out[t] = np.clip((_smooth_noise(rng, 5, size) + 0.8) * 100.0, 0.0, 100.0)
        return np.rint(out)

    @staticmethod
    def _overlay(pixels: np.ndarray, probability: np.ndarray, spectrum: str) -> np.ndarray:
        """Mix the surface with a bright spectrum in proportion to the flagged probability."""
        alpha = (probability / 100.0)[:, None]
        return (1 - alpha) * pixels + alpha * np.asarray(_SPECTRA[spectrum], dtype=np.float32)[None, :, None, None]

    def sentinel1(self, key: str) -> np.ndarray:
        """(T, 2, H, W) float32 VV, VH sigma0 (linear): vegetation raises VH, speckle multiplies."""
        rng, size = self.rng, MODALITIES[key].size_px
        doy = self.doys[MODALITIES[key].dates_table]
        veg = self.vegetation(doy)  # (K, T)
        base = np.array([_LC_SURFACES[lc].sar for lc in self.scene.lc], dtype=np.float32)  # (K, 2)
        gain = np.array([5.0, 9.0], dtype=np.float32)
        decibels = base[:, None, :] + veg[..., None] * gain + _SAR_ORBIT_OFFSET_DB[key]
        decibels += rng.normal(0.0, 0.7, (1, len(doy), 1)).astype(np.float32)  # soil moisture of the day
        linear = np.power(np.float32(10.0), decibels / 10.0)  # (K, T, 2)
        pixels = np.einsum("pk,ktb->tbp", self._fractions(size), linear).reshape(len(doy), 2, size, size)
        speckle = rng.gamma(_SAR_LOOKS, 1.0 / _SAR_LOOKS, pixels.shape)
        return np.clip(pixels * speckle, 1e-4, 2.0).astype(np.float32)


_PRODUCTS: dict[str, Callable[[_Renderer], np.ndarray]] = {
    "aerial": _Renderer.aerial,
    "dem": _Renderer.dem,
    "spot": _Renderer.spot,
    "s2": lambda r: r.sentinel2()[0],
    "s2_mask": lambda r: r.sentinel2()[1],
    "s1_asc": lambda r: r.sentinel1("s1_asc"),
    "s1_des": lambda r: r.sentinel1("s1_des"),
    "hist": _Renderer.hist,
    "lc": _Renderer.lc,
    "lpis": _Renderer.lpis,
}
"""How the toy simulates each registry modality; every modality of the registry must be here."""
assert set(_PRODUCTS) == set(MODALITIES), "the toy dataset must simulate every modality of the registry"


# -------------------------------------------------------------------------------- writing
def _transform(modality: Modality, origin: tuple[float, float]) -> Affine:
    """Same footprint for every modality: the pixel size is the 102.4 m patch over the raster size."""
    pixel = PATCH_SIZE_M / modality.size_px
    assert math.isclose(pixel, modality.pixel_size_m, rel_tol=1e-6), modality.key
    return Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])


def _write_raster(path: Path, array: np.ndarray, modality: Modality, transform: Affine) -> None:
    """GeoTIFF with DEFLATE and the predictor that suits the dtype; time series stay date-major."""
    bands = array.reshape(-1, *array.shape[-2:]).astype(modality.dtype, copy=False)
    floating = np.issubdtype(bands.dtype, np.floating)
    profile = {
        "driver": "GTiff", "dtype": modality.dtype, "count": bands.shape[0], "height": bands.shape[1],
        "width": bands.shape[2], "crs": CRS, "transform": transform, "compress": "deflate",
        "predictor": 3 if floating else 2, "zlevel": 6, "interleave": "band" if modality.temporal else "pixel",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        per_date = bands.shape[0] // modality.num_bands
        names = modality.bands if per_date == 1 else [f"{b}_t{t}" for t in range(per_date) for b in modality.bands]
        dst.descriptions = tuple(names)


def _check_inside(root: Path, relpath: Path) -> Path:
    """Resolve a generated path and refuse anything that would land outside the output folder."""
    path = (root / relpath).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"refusing to write {path}: outside the output directory {root}")
    return path


def _prepare_output(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"toy dataset output {out} exists and is not an empty directory; choose a new path")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _write_splits(root: Path, rows: Mapping[str, list[dict[str, str]]]) -> None:
    columns = ["patch_id", *MODALITIES]
    for split, split_rows in rows.items():
        path = _check_inside(root, split_csv_path(Path(), SPLIT_NAME, split))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(split_rows)


# -------------------------------------------------------------------------------- summary
@dataclass
class ToySummary:
    """What was written, for the CLI log and for tests."""

    root: Path
    seed: int
    patches: dict[str, int]
    domains: dict[str, tuple[str, ...]]
    dates: dict[str, tuple[int, float, int]]
    """Dates table -> (min, mean, max) number of dates per patch."""
    short_s2: int
    """Patches with fewer S2 dates than the model's default number of dates."""
    cloudy_fraction: float
    """Share of S2 dates with some cloud probability above zero."""
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        lines = [f"toy FLAIR-HUB dataset at {self.root} (seed {self.seed}): {sum(self.patches.values())} patches"]
        lines += [f"  {split:5s} {n:4d} patches  domains {', '.join(self.domains[split])}"
                  for split, n in self.patches.items()]
        lines += [f"  dates {table:15s} min {lo:3d}  mean {mean:5.1f}  max {hi:3d}"
                  for table, (lo, mean, hi) in self.dates.items()]
        lines.append(f"  S2 series shorter than {MODALITIES['s2'].num_dates} dates: {self.short_s2} patches; "
                     f"cloudy S2 dates: {100 * self.cloudy_fraction:.0f}%")
        lines.append(f"  {self.bytes_written / 2**20:.1f} MiB written in {self.seconds:.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ API
def _simulate(plan: _PatchPlan, seed: int, terrain: _Terrain) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All rasters of one patch (modality -> array) and its dates (dates table -> YYYYMMDD)."""
    rng = np.random.default_rng((seed, 0, plan.index))
    tables = dict.fromkeys(m.dates_table for m in MODALITIES.values() if m.dates_table)
    doys = {table: _draw_dates(rng, plan.year, _ACQUISITIONS[table]) for table in tables}
    scene = _build_scene(plan, rng)
    renderer = _Renderer(scene, terrain, doys, regional_shift=float(rng.normal(0.0, 4.0)))
    rasters = {key: product(renderer) for key, product in _PRODUCTS.items()}
    dates = {table: _to_yyyymmdd(plan.year, doy) for table, doy in doys.items()}
    return rasters, dates


def _write_patch(root: Path, plan: _PatchPlan, rasters: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Write every raster of one patch; returns its split-CSV row (patch id + relative paths)."""
    row = {"patch_id": str(plan.patch)}
    for key, array in rasters.items():
        modality = MODALITIES[key]
        relpath = raster_relpath(modality, plan.patch)
        _write_raster(_check_inside(root, relpath), array, modality, _transform(modality, plan.origin))
        row[key] = relpath.as_posix()
    return row


def _cloudy_dates(rasters: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(dates with some cloud probability, dates) over the mask modalities that have a CLOUD band."""
    cloudy = total = 0
    for key, array in rasters.items():
        modality = MODALITIES[key]
        if modality.kind == "mask" and "CLOUD" in modality.bands:
            cloud = array[:, modality.bands.index("CLOUD")]
            cloudy += int((cloud.reshape(len(cloud), -1).max(axis=1) > 0).sum())
            total += len(cloud)
    return cloudy, total


def write_toy_dataset(out: Path, num_patches: int = 200, seed: int = 0) -> ToySummary:
    """Write a synthetic FLAIR-HUB tree (rasters, date tables, split CSVs) under ``out``.

    ``out`` must be absent or an empty directory; nothing is written outside it. The same seed
    (and number of patches) gives the same rasters byte for byte.
    """
    started = time.perf_counter()
    plans = _plan_patches(num_patches)
    root = _prepare_output(out)
    log.info("writing %d toy patches (seed %d) to %s", num_patches, seed, root)
    terrains: dict[int, _Terrain] = {}
    dates: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, list[dict[str, str]]] = {split: [] for split in SPLIT_DOMAINS}
    cloudy = [0, 0]
    for plan in tqdm(plans, desc="toy patches", unit="patch", disable=None):
        if plan.roi_index not in terrains:
            terrains[plan.roi_index] = _Terrain.draw(np.random.default_rng((seed, 1, plan.roi_index)))
        rasters, patch_dates = _simulate(plan, seed, terrains[plan.roi_index])
        rows[plan.split].append(_write_patch(root, plan, rasters))
        cloudy = [a + b for a, b in zip(cloudy, _cloudy_dates(rasters), strict=True)]
        for table, values in patch_dates.items():
            dates.setdefault(table, {})[str(plan.patch)] = values
    for table, table_rows in dates.items():
        path = _check_inside(root, dates_table_path(Path(), table))
        write_dates_table(path, {pid: [int(d) for d in values] for pid, values in table_rows.items()})
    _write_splits(root, rows)
    summary = _summarise(root, seed, plans, dates, cloudy[0] / max(cloudy[1], 1), time.perf_counter() - started)
    log.info("wrote %d toy patches (%.1f MiB) in %.1f s", num_patches, summary.bytes_written / 2**20, summary.seconds)
    return summary


def _summarise(root: Path, seed: int, plans: Sequence[_PatchPlan], dates: Mapping[str, Mapping[str, np.ndarray]],
               cloudy_fraction: float, seconds: float) -> ToySummary:
    counts = {table: np.array([len(v) for v in rows.values()]) for table, rows in dates.items()}
    s2 = MODALITIES["s2"]
    return ToySummary(
        root=root, seed=seed,
        patches={split: sum(p.split == split for p in plans) for split in SPLIT_DOMAINS},
        domains={split: tuple(dict.fromkeys(p.patch.domain for p in plans if p.split == split))
                 for split in SPLIT_DOMAINS},
        dates={table: (int(c.min()), float(c.mean()), int(c.max())) for table, c in counts.items()},
        short_s2=int((counts[str(s2.dates_table)] < (s2.num_dates or 0)).sum()),
        cloudy_fraction=cloudy_fraction,
        bytes_written=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        seconds=seconds,
    )
