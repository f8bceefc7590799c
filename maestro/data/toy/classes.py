"""How each land-cover (COSIA) and crop (LPIS) class looks and grows in the toy dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maestro.labels import LABEL_SETS


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


LC_SURFACES: tuple[Surface, ...] = (
    Surface("tiles", "bare", (4.0, 14.0), "flat", (0.02, 0.03, 0.0, 0.02), sar=(-3.0, -12.0)),  # building
    Surface("plastic", "bare", (2.5, 4.0), "flat", (0.02, 0.02, 0.02, 0.0), sar=(-6.0, -16.0)),  # greenhouse
    Surface(
        "pool", "bare", (0.0, 0.0), "ground", (0.02, 0.01, 0.01, 0.0), sar=(-20.0, -28.0)
    ),  # swimming pool
    Surface(
        "asphalt", "bare", (0.0, 0.1), "ground", (0.06, 0.04, 0.05, 0.05), sar=(-12.0, -22.0)
    ),  # impervious
    Surface(
        "gravel", "sparse", (0.0, 0.3), "ground", (0.10, 0.06, 0.06, 0.05), sar=(-13.0, -23.0)
    ),  # pervious
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
LC = {name: value for value, name in enumerate(_LC_NAMES)}
assert len(LC_SURFACES) == len(_LC_NAMES)


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


CROPS: tuple[Crop, ...] = (
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
    Crop(
        "aromatic/medicinal plants", "aromatic/medicinal plants", "other arable crops", "vegetables", 20, 0.5
    ),
    Crop("buckwheat", "other arable crops", "other arable crops", "spring_cereal", 45, 0.3),
    Crop("other arable crops", "other arable crops", "other arable crops", "fallow", 0, 1.0),
    Crop("vineyard", "vineyard", "vineyard", "vineyard", 0, 5.0, "vineyard"),
    Crop("olive groves", "olive groves", "olive groves", "olive", 0, 1.0, "brushwood"),
    Crop("fruit orchards", "fruit orchards", "fruit orchards", "orchard", 0, 1.5, "deciduous"),
    Crop("nut orchards", "nut orchards", "nut orchards", "orchard", 12, 0.8, "deciduous"),
    Crop("lavandin", "lavandin", "other permanent crops", "lavandin", 0, 0.8),
    Crop("berries", "other permanent crops", "other permanent crops", "orchard", -10, 0.4, "brushwood"),
    Crop(
        "other permanent crops",
        "other permanent crops",
        "other permanent crops",
        "shrub",
        0,
        0.8,
        "brushwood",
    ),
    Crop("mixed crops", "mixed crops", "mixed crops", "fallow", 0, 2.5),
    Crop("background", "background", "background", "bare", 0, 0.0),
)
"""Level-3 classes in label order with their level-2 / level-1 parents (names of maestro.labels)."""


def _lpis_hierarchy() -> np.ndarray:
    """(46, 3) table: level-3 value -> (level 1, level 2, level 3) values, resolved from the names."""
    levels = LABEL_SETS["lpis"].levels
    assert [c.level3 for c in CROPS] == list(levels[2].names), "crop table must follow level-3 order"
    return np.array(
        [(levels[0].names.index(c.level1), levels[1].names.index(c.level2), i) for i, c in enumerate(CROPS)],
        dtype=np.uint8,
    )


LPIS_HIERARCHY: np.ndarray = _lpis_hierarchy()
"""Row = level-3 value; columns = the level-1, level-2 and level-3 values (band order of ``lpis``)."""
BACKGROUND_L3 = len(CROPS) - 1
MIXED_L3 = [c.level3 for c in CROPS].index("mixed crops")
CROP_WEIGHTS = np.array([c.weight for c in CROPS]) / sum(c.weight for c in CROPS)
