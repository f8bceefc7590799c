"""Label nomenclatures (FLAIR-HUB: docs/method.md, "Labels"; FLAIR #2) and what is trained / evaluated."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

from maestro.data.flair2 import nomenclature as flair2_nomenclature

IGNORE_INDEX = 255
"""Value written into targets for pixels that are neither trained nor evaluated."""

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class LabelLevel:
    """One nomenclature: class names by value, and which values are trained and scored."""

    names: tuple[str, ...]
    ignored: frozenset[int]
    """Values excluded from the loss and from the metrics (mapped to :data:`IGNORE_INDEX`)."""
    colours: tuple[RGB, ...] | None = None
    """One RGB colour per value (a user's nomenclature); None: :func:`palette` picks them."""

    @property
    def num_values(self) -> int:
        """Number of distinct values that may legally appear on disk."""
        return len(self.names)

    @property
    def num_classes(self) -> int:
        """Number of output channels a segmentation head needs (the largest trained value + 1)."""
        return max(v for v in range(self.num_values) if v not in self.ignored) + 1

    @property
    def evaluated(self) -> list[int]:
        return [v for v in range(self.num_values) if v not in self.ignored]

    @property
    def ignored_channels(self) -> tuple[int, ...]:
        """Output channels of ignored values (LPIS "mixed crops"; LC 15-18 have none): the head
        keeps them so checkpoints keep their shape, and predictions never take them."""
        return tuple(v for v in sorted(self.ignored) if v < self.num_classes)


@dataclass(frozen=True)
class LabelSet:
    """A label raster: one band per level."""

    key: str
    levels: tuple[LabelLevel, ...]

    def level(self, level: int) -> LabelLevel:
        if not 1 <= level <= len(self.levels):
            raise ValueError(f"label set {self.key!r} has levels 1..{len(self.levels)}, got {level}")
        return self.levels[level - 1]


_LC = (
    "building",
    "greenhouse",
    "swimming pool",
    "impervious surface",
    "pervious surface",
    "bare soil",
    "water",
    "snow",
    "herbaceous vegetation",
    "agricultural land",
    "plowed land",
    "vineyard",
    "deciduous",
    "coniferous",
    "brushwood",
    "clear cut",
    "ligneous",
    "mixed",
    "undefined",
)

_LPIS_1 = (
    "grasses",
    "wheat",
    "barley",
    "maize",
    "other cereals",
    "rice",
    "hemp/flax/tobacco",
    "sunflower",
    "rapeseed",
    "other oilseed crops",
    "soy",
    "other protein crops",
    "fodder legumes",
    "beetroots",
    "potatoes",
    "other arable crops",
    "vineyard",
    "olive groves",
    "fruit orchards",
    "nut orchards",
    "other permanent crops",
    "mixed crops",
    "background",
)

_LPIS_2 = (
    "grasses",
    "wheat",
    "barley",
    "maize",
    "sorghum/millet",
    "other winter cereals",
    "other spring cereals",
    "other cereals",
    "rice",
    "hemp/tobacco",
    "flax",
    "sunflower",
    "rapeseed",
    "other oilseed crops",
    "soy",
    "other protein crops",
    "alfalfa",
    "other fodder legumes",
    "beetroots",
    "potatoes",
    "fruits and vegetables",
    "aromatic/medicinal plants",
    "other arable crops",
    "vineyard",
    "olive groves",
    "fruit orchards",
    "nut orchards",
    "lavandin",
    "other permanent crops",
    "mixed crops",
    "background",
)

_LPIS_3 = (
    "grasses monoculture",
    "grasses mixture",
    "winter wheat",
    "spring wheat",
    "winter barley",
    "spring barley",
    "maize",
    "sorghum",
    "millet/foxtail millet",
    "winter durum wheat",
    "winter triticale",
    "winter oat",
    "winter rye",
    "spring oat",
    "other spring cereals",
    "other cereals",
    "rice",
    "hemp/tobacco",
    "fiber flax",
    "other flax",
    "sunflower",
    "rapeseed",
    "mustard",
    "other oilseed crops",
    "soy",
    "spring peas",
    "winter protein crops",
    "other protein crops",
    "alfalfa",
    "clover",
    "other fodder legumes",
    "beetroots",
    "potatoes",
    "fruits and vegetables",
    "aromatic/medicinal plants",
    "buckwheat",
    "other arable crops",
    "vineyard",
    "olive groves",
    "fruit orchards",
    "nut orchards",
    "lavandin",
    "berries",
    "other permanent crops",
    "mixed crops",
    "background",
)


def _lpis_level(names: tuple[str, ...]) -> LabelLevel:
    # "Mixed crops" is an unknown crop, not a class: ignored in loss and metrics.
    return LabelLevel(names=names, ignored=frozenset({names.index("mixed crops")}))


LABEL_SETS: dict[str, LabelSet] = {
    "lc": LabelSet("lc", (LabelLevel(names=_LC, ignored=frozenset(range(15, 19))),)),
    "lpis": LabelSet("lpis", tuple(_lpis_level(n) for n in (_LPIS_1, _LPIS_2, _LPIS_3))),
    # FLAIR #2's 13 grouped classes (its reader groups the 19 raw mask values); "other" is ignored.
    "flair2": LabelSet(
        "flair2",
        (
            LabelLevel(
                names=flair2_nomenclature.CLASS_NAMES,
                ignored=frozenset(flair2_nomenclature.IGNORED_CLASSES),
            ),
        ),
    ),
}

assert [len(level.names) for level in LABEL_SETS["lpis"].levels] == [23, 31, 46]
assert LABEL_SETS["lc"].level(1).num_classes == 15
assert LABEL_SETS["flair2"].level(1).num_values == 13 and LABEL_SETS["flair2"].level(1).num_classes == 12


def rgb_of_hex(hex_colour: str) -> RGB:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


_LC_COLORS: tuple[RGB, ...] = tuple(
    rgb_of_hex(h)
    for h in (
        "#db0e9a",
        "#9999ff",
        "#3de6eb",
        "#f80c00",
        "#938e7b",
        "#a97101",
        "#1553ae",
        "#ffffff",
        "#55ff00",
        "#fff30d",
        "#e4df7c",
        "#660082",
        "#46e483",
        "#194a26",
        "#f3a60d",
        "#8ab3a0",
        "#c5dc42",
        "#6b714f",
        "#000000",
    )
)
"""The FLAIR-HUB land-cover colours, one per LC value, so maps look like the published ones."""

_BACKGROUND_GREY: RGB = (128, 128, 128)
_BLACK: RGB = (0, 0, 0)


def _distinct_colors(count: int) -> list[RGB]:
    """``count`` fixed colours: evenly spaced hues in three saturation/brightness tiers.

    Consecutive classes fall in different tiers and classes of one tier are a hue step apart, so
    neighbouring values never look alike; no colour is grey or black (kept for background/ignored).
    """
    tiers = ((0.85, 0.95), (0.55, 0.80), (0.90, 0.55))
    per_tier = max(1, -(-count // len(tiers)))
    colours = []
    for k in range(count):
        tier, slot = k % len(tiers), k // len(tiers)
        hue = (slot + tier / len(tiers)) / per_tier
        r, g, b = colorsys.hsv_to_rgb(hue, *tiers[tier])
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return colours


def palette(level: LabelLevel) -> tuple[RGB, ...]:
    """One RGB colour per value of ``level``, fixed so figures of different runs compare.

    A nomenclature's own colours win (a user's YAML); land cover uses the FLAIR-HUB colours, FLAIR #2
    its release's colours; other nomenclatures get generated distinct colours, with "background"
    grey and ignored values (LPIS "mixed crops") black.
    """
    if level.colours is not None:
        return level.colours
    if level.names == _LC:
        return _LC_COLORS
    if level.names == flair2_nomenclature.CLASS_NAMES:
        return tuple(rgb_of_hex(h) for h in flair2_nomenclature.CLASS_COLORS)
    generated = iter(
        _distinct_colors(
            sum(1 for v, name in enumerate(level.names) if v not in level.ignored and name != "background")
        )
    )
    return tuple(
        _BLACK if v in level.ignored else _BACKGROUND_GREY if name == "background" else next(generated)
        for v, name in enumerate(level.names)
    )
