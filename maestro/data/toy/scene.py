"""The latent world of one toy patch: background segments, fields, roads and buildings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from maestro.data.layout import PATCH_SIZE_M
from maestro.data.toy.classes import BACKGROUND_L3, CROP_WEIGHTS, CROPS, LC, LC_SURFACES, MIXED_L3
from maestro.data.toy.grid import RES, SIZE, coordinates, smooth_noise
from maestro.data.toy.plan import PatchPlan


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
    SceneType(
        "urban",
        0.12,
        {
            "impervious surface": 0.35,
            "pervious surface": 0.2,
            "herbaceous vegetation": 0.2,
            "deciduous": 0.15,
            "coniferous": 0.03,
            "bare soil": 0.05,
            "brushwood": 0.02,
            "undefined": 0.01,
        },
        (20, 40),
        0.0,
        0.0,
        (8, 20),
        0.9,
        pools=(0, 3),
    ),
    SceneType(
        "rural",
        0.25,
        {
            "herbaceous vegetation": 0.3,
            "agricultural land": 0.15,
            "deciduous": 0.15,
            "brushwood": 0.1,
            "pervious surface": 0.07,
            "impervious surface": 0.05,
            "bare soil": 0.05,
            "water": 0.05,
            "plowed land": 0.05,
            "ligneous": 0.02,
            "mixed": 0.01,
        },
        (10, 25),
        0.5,
        0.6,
        (0, 4),
        0.5,
        pools=(0, 1),
        greenhouses=0.15,
    ),
    SceneType(
        "agricultural",
        0.40,
        {"herbaceous vegetation": 0.4, "brushwood": 0.25, "deciduous": 0.2, "pervious surface": 0.15},
        (8, 16),
        1.0,
        0.8,
        (0, 1),
        0.3,
    ),
    SceneType(
        "forest",
        0.13,
        {
            "deciduous": 0.4,
            "coniferous": 0.35,
            "brushwood": 0.15,
            "clear cut": 0.05,
            "herbaceous vegetation": 0.05,
        },
        (8, 20),
        0.0,
        0.0,
        (0, 0),
        0.2,
    ),
    SceneType(
        "natural",
        0.10,
        {
            "water": 0.25,
            "bare soil": 0.15,
            "snow": 0.04,
            "herbaceous vegetation": 0.25,
            "brushwood": 0.2,
            "coniferous": 0.1,
            "undefined": 0.01,
        },
        (8, 20),
        0.0,
        0.0,
        (0, 0),
        0.0,
    ),
)
_FIELD_FILL = {
    "herbaceous vegetation": 0.35,
    "agricultural land": 0.3,
    "plowed land": 0.15,
    "brushwood": 0.1,
    "deciduous": 0.1,
}
"""Land cover of a field that is not a declared parcel."""
assert math.isclose(sum(s.probability for s in _SCENES), 1.0)


@dataclass
class Scene:
    """The latent world of one patch: components (segments, fields, objects) on the 0.2 m grid."""

    plan: PatchPlan
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

    def add(self, lc: int, crop: int = BACKGROUND_L3, profile: str | None = None, shift: float = 0.0) -> int:
        """Register a component with per-component random height, brightness and timing jitter."""
        surface = LC_SURFACES[lc]
        material = surface.material
        if lc == LC["building"]:
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


def _voronoi(rng: np.random.Generator, count: int) -> np.ndarray:
    """Organic segments: Voronoi cells of warped coordinates, computed at 0.4 m and upsampled."""
    half = SIZE // 2
    axis = np.arange(half, dtype=np.float32)
    warp = 6.0
    yy = axis[:, None] + warp * smooth_noise(rng, 32, half)
    xx = axis[None, :] + warp * smooth_noise(rng, 32, half)
    seeds = rng.uniform(0, half, size=(count, 2)).astype(np.float32)
    distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cells = distance.argmin(axis=-1).astype(np.int32)
    return cells.repeat(2, axis=0).repeat(2, axis=1)


def _background(scene: Scene, kind: SceneType) -> None:
    count = int(scene.rng.integers(kind.segments[0], kind.segments[1] + 1))
    cells = _voronoi(scene.rng, count)
    for _ in range(count):
        scene.add(LC[_choice(scene.rng, kind.cover)])
    scene.component = cells


def _fields(scene: Scene, kind: SceneType, u: np.ndarray, v: np.ndarray) -> None:
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


def _field_component(scene: Scene, kind: SceneType) -> int:
    rng = scene.rng
    if rng.random() >= kind.declared:
        lc = LC[_choice(rng, _FIELD_FILL)]
        profile = CROPS[_draw_crop(rng)].profile if lc == LC["agricultural land"] else None
        return scene.add(lc, profile=profile)
    crop = _draw_crop(rng)
    spec = CROPS[crop]
    profile = spec.profile
    if crop == MIXED_L3:  # an unknown mixture: any phenology
        profile = CROPS[_draw_crop(rng)].profile
    if spec.look == "field":
        lc = LC["agricultural land"] if rng.random() < 0.75 else LC["plowed land"]
    else:
        lc = LC[spec.look]
    return scene.add(lc, crop=crop, profile=profile, shift=spec.shift)


def _draw_crop(rng: np.random.Generator) -> int:
    return int(rng.choice(len(CROPS), p=CROP_WEIGHTS))


def _roads(scene: Scene, kind: SceneType, u: np.ndarray, v: np.ndarray) -> None:
    rng = scene.rng
    for _ in range(2):
        if rng.random() >= kind.roads:
            continue
        axis = u if rng.random() < 0.5 else v
        centre, width = float(rng.uniform(-40.0, 40.0)), float(rng.uniform(4.0, 8.0))
        scene.component[np.abs(axis - centre) < width / 2] = scene.add(LC["impervious surface"])


def _rectangles(scene: Scene, lc: int, count: int, size: tuple[float, float, float, float]) -> None:
    """Stamp rotated rectangles (buildings, pools, greenhouses) of sides in the given ranges (m)."""
    rng = scene.rng
    c, s = math.cos(scene.angle), math.sin(scene.angle)
    for _ in range(count):
        length, width = rng.uniform(size[0], size[1]), rng.uniform(size[2], size[3])
        cy, cx = rng.uniform(0, SIZE, size=2)
        reach = int(math.hypot(length, width) / 2 / RES) + 1
        y0, y1 = max(0, int(cy) - reach), min(SIZE, int(cy) + reach)
        x0, x1 = max(0, int(cx) - reach), min(SIZE, int(cx) + reach)
        yy = (np.arange(y0, y1)[:, None] + 0.5 - cy) * RES
        xx = (np.arange(x0, x1)[None, :] + 0.5 - cx) * RES
        inside = (np.abs(xx * c + yy * s) < length / 2) & (np.abs(-xx * s + yy * c) < width / 2)
        scene.component[y0:y1, x0:x1][inside] = scene.add(lc)


def build_scene(plan: PatchPlan, rng: np.random.Generator) -> Scene:
    """Compose one patch: background segments, then fields, roads, pools and buildings on top."""
    kind = _SCENES[int(rng.choice(len(_SCENES), p=[s.probability for s in _SCENES]))]
    scene = Scene(plan=plan, rng=rng, component=np.zeros((SIZE, SIZE), np.int32))
    scene.angle = float(rng.uniform(0.0, math.pi))
    _background(scene, kind)
    u, v = coordinates(scene.angle)
    if kind.fields > 0:
        _fields(scene, kind, u, v)
    _roads(scene, kind, u, v)
    _rectangles(
        scene, LC["swimming pool"], int(rng.integers(kind.pools[0], kind.pools[1] + 1)), (6, 12, 3, 6)
    )
    if rng.random() < kind.greenhouses:
        _rectangles(scene, LC["greenhouse"], int(rng.integers(1, 3)), (20, 40, 8, 12))
    _rectangles(
        scene, LC["building"], int(rng.integers(kind.buildings[0], kind.buildings[1] + 1)), (8, 25, 6, 14)
    )
    return scene
