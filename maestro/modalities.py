"""The modality registry: one declarative entry per raster type (FLAIR-HUB's, and FLAIR #2's own).

Every other part of the suite (reader, toy generator, shards, preprocessing, tokenizers, heads)
reads these entries instead of hard-coding per-modality facts, so adding a modality is one entry
here. The facts are summarised in docs/method.md (data and method). Which dataset holds which
modality, and where a dataset's sizes differ from these rows, is :mod:`maestro.datasets`'s table:
``elevation`` (the 5th band of FLAIR #2's aerial images) and the ``flair2`` labels exist only
there, and their ``sensor`` / ``datatype`` name no FLAIR-HUB folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from maestro.errors import ConfigError
from maestro.labels import LABEL_SETS

if TYPE_CHECKING:  # the registry is read by every command's start-up: no torch import at run time
    import torch

Kind = Literal["image", "mask", "label"]


class Scaling(Protocol):
    """Maps raw values (``..., C, H, W`` in model band order) to network input scale.

    ``__call__`` scales numpy arrays in data-loader workers: a writable float32 array in place (the
    512 px rasters are never copied again), anything else into a new float32 array by its first
    operation (no copy before it). ``tensor`` is the same formula on torch tensors, for rasters
    shipped in their on-disk dtype and scaled on the device after the transfer; both live here so
    the scaling stays in one place. ``tensor`` uses tensor methods only: the registry is imported
    by every command at start-up, before torch is needed.
    """

    def __call__(self, values: np.ndarray, bands: tuple[str, ...]) -> np.ndarray: ...

    def tensor(self, values: torch.Tensor, bands: tuple[str, ...]) -> torch.Tensor: ...


_CONSTANTS: dict[tuple[float, object, object], torch.Tensor] = {}


def _constant(like: torch.Tensor, value: float) -> torch.Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype and device, made once per process: made at every
    call it is copied from pageable host memory, which on a GPU waits for all the work already
    queued (a full sync per batch). A 0-d tensor rather than a Python number keeps the division
    exact, as in the workers (a GPU divides by a Python number through its reciprocal)."""
    key = (value, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = like.new_tensor(value)
    return _CONSTANTS[key]


def _first_pass(ufunc: np.ufunc, values: np.ndarray, operand: float) -> np.ndarray:
    """``ufunc(values, operand)`` as float32: in place on a writable float32 array (no copy),
    otherwise read once into a new float32 array that the later steps may then modify in place."""
    operand = np.float32(operand)
    if isinstance(values, np.ndarray) and values.dtype == np.float32 and values.flags.writeable:
        return ufunc(values, operand, out=values)
    return ufunc(values, operand, dtype=np.float32)


@dataclass(frozen=True)
class Divide:
    """x / factor: reflectances and 8-bit imagery."""

    factor: float

    def __call__(self, values: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
        return _first_pass(np.divide, values, self.factor)

    def tensor(self, values: torch.Tensor, bands: tuple[str, ...]) -> torch.Tensor:
        values = values.float()
        return values / _constant(values, self.factor)


@dataclass(frozen=True)
class LogBackscatter:
    """ln(max(x, eps)) / divisor: SAR sigma0 spans decades, the log makes it Gaussian-like."""

    divisor: float = 5.0
    eps: float = 1e-10

    def __call__(self, values: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
        values = _first_pass(np.maximum, values, self.eps)
        np.log(values, out=values)
        return np.divide(values, np.float32(self.divisor), out=values)

    def tensor(self, values: torch.Tensor, bands: tuple[str, ...]) -> torch.Tensor:
        values = values.float()
        return values.clamp_min(_constant(values, self.eps)).log() / self.divisor


@dataclass(frozen=True)
class ElevationWithHeight:
    """Elevation / divisor, with the DTM channel replaced by gain * (DSM - DTM).

    Absolute elevation says little about land cover; the height above ground (buildings, trees)
    says a lot, so the second channel carries it amplified.
    """

    divisor: float = 1000.0
    height_gain: float = 30.0
    surface_band: str = "DSM"
    terrain_band: str = "DTM"

    def __call__(self, values: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
        values = _first_pass(np.divide, values, self.divisor)
        if self.surface_band in bands and self.terrain_band in bands:
            surface = values[..., bands.index(self.surface_band), :, :]
            terrain = values[..., bands.index(self.terrain_band), :, :]
            np.subtract(surface, terrain, out=terrain)
            np.multiply(terrain, np.float32(self.height_gain), out=terrain)
        return values

    def tensor(self, values: torch.Tensor, bands: tuple[str, ...]) -> torch.Tensor:
        values = values.float()
        values = values / _constant(values, self.divisor)
        if self.surface_band in bands and self.terrain_band in bands:
            surface, terrain = bands.index(self.surface_band), bands.index(self.terrain_band)
            height = (values[..., surface, :, :] - values[..., terrain, :, :]) * self.height_gain
            values = values.clone()
            values[..., terrain, :, :] = height
        return values


@dataclass(frozen=True)
class Modality:
    """Everything the suite knows about one raster type of FLAIR-HUB."""

    key: str
    """Name used everywhere in code, configs and shards (``s1_asc``)."""
    sensor: str
    """``{SENSOR}`` part of the folder name (``SENTINEL1-ASC``)."""
    datatype: str
    """``{DATATYPE}`` part of the folder name (``TS``)."""
    bands: tuple[str, ...]
    """Band names in on-disk order (per date for time series)."""
    dtype: str
    """numpy dtype on disk."""
    pixel_size_m: float
    size_px: int
    """Native height = width in pixels (every patch covers 102.4 m)."""
    kind: Kind = "image"
    temporal: bool = False
    dates_table: str | None = None
    """``GLOBAL_ALL_MTD/GLOBAL_{dates_table}_MTD_DATES.gpkg`` holds this modality's dates."""
    domain_year: str | None = None
    """Replaces the year of the domain in folder and file names (``195X`` for historical imagery)."""
    input_bands: tuple[str, ...] = ()
    """Default bands fed to the network, in network order (e.g. NIR first for aerial)."""
    patch_size: int | None = None
    """Tokenizer patch size in native pixels, chosen so token footprints align across sensors."""
    num_dates: int | None = None
    """Default number of dates a time series is reduced to."""
    scaling: Scaling | None = None
    norm_groups: tuple[tuple[str, ...], ...] = ()
    """Band groups over which the MAE target is normalised per patch."""
    fusion_group: str | None = None
    """Modalities sharing a fusion group share one token sequence in ``group`` fusion mode."""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    """Dataset-wide per-band statistics (on-disk band order), where published."""
    companion_of: str | None = None
    """A mask modality names the image modality whose dates it shares."""
    label_set: str | None = None
    """Key into :data:`maestro.labels.LABEL_SETS` for label modalities."""
    display_bands: tuple[str, ...] = ()
    """Bands drawn as red, green, blue in figures (one band: grey)."""
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def folder_suffix(self) -> str:
        return f"{self.sensor}_{self.datatype}"

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def is_input(self) -> bool:
        return self.kind == "image"

    @property
    def scales_on_device(self) -> bool:
        """Integer on disk with a uniform division as scaling (aerial, SPOT, S2, historical): such
        rasters can travel unscaled (4x / 2x fewer bytes than float32) and be scaled after the
        transfer, and date selection picks the same dates on raw values."""
        return np.issubdtype(np.dtype(self.dtype), np.integer) and isinstance(self.scaling, Divide)

    def band_indices(self, bands: Iterable[str]) -> list[int]:
        """Positions of ``bands`` in on-disk order; raises on an unknown band name."""
        indices = []
        for band in bands:
            if band not in self.bands:
                raise ValueError(f"modality {self.key!r} has no band {band!r}; bands are {self.bands}")
            indices.append(self.bands.index(band))
        return indices

    def norm_group_indices(self, bands: tuple[str, ...] | None = None) -> list[list[int]]:
        """Target-normalisation groups as indices into ``bands`` (default: the input bands).

        Groups are restricted to the selected bands; a group left empty is dropped.
        """
        bands = bands or self.input_bands
        groups = self.norm_groups or (tuple(bands),)
        out = [[bands.index(b) for b in group if b in bands] for group in groups]
        return [g for g in out if g]


_S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")

_ENTRIES = (
    Modality(
        key="aerial",
        sensor="AERIAL",
        datatype="RGBI",
        bands=("R", "G", "B", "NIR"),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        dates_table="AERIAL",
        input_bands=("NIR", "R", "G", "B"),
        patch_size=16,
        scaling=Divide(255.0),
        norm_groups=(("NIR",), ("R", "G", "B")),
        fusion_group="aerial",
        mean=(105.66, 111.35, 102.18, 106.59),
        std=(52.23, 45.62, 44.30, 39.78),
        display_bands=("R", "G", "B"),
    ),
    Modality(
        key="dem",
        sensor="DEM",
        datatype="ELEV",
        bands=("DSM", "DTM"),
        dtype="float32",
        pixel_size_m=0.2,
        size_px=512,
        input_bands=("DSM", "DTM"),
        patch_size=32,
        scaling=ElevationWithHeight(),
        norm_groups=(("DSM", "DTM"),),
        fusion_group="dem",
        mean=(311.06, 307.06),
        std=(537.55, 537.82),
        display_bands=("DSM",),
    ),
    Modality(
        key="spot",
        sensor="SPOT",
        datatype="RGBI",
        bands=("R", "G", "B", "NIR"),
        dtype="uint16",
        pixel_size_m=1.6,
        size_px=64,
        dates_table="SPOT",
        input_bands=("NIR", "R", "G", "B"),
        patch_size=4,
        scaling=Divide(2000.0),
        norm_groups=(("NIR", "R", "G", "B"),),
        fusion_group="spot",
        mean=(433.26, 508.75, 467.77, 1137.03),
        std=(312.76, 284.61, 226.02, 543.11),
        display_bands=("R", "G", "B"),
    ),
    Modality(
        key="s2",
        sensor="SENTINEL2",
        datatype="TS",
        bands=_S2_BANDS,
        dtype="uint16",
        pixel_size_m=10.24,
        size_px=10,
        temporal=True,
        dates_table="SENTINEL2",
        input_bands=_S2_BANDS,
        patch_size=2,
        num_dates=16,
        scaling=Divide(5000.0),
        norm_groups=(("B2", "B3", "B4", "B5"), ("B6", "B7", "B8", "B8A"), ("B11", "B12")),
        fusion_group="s2",
        display_bands=("B4", "B3", "B2"),
    ),
    Modality(
        key="s2_mask",
        sensor="SENTINEL2",
        datatype="MSK-SC",
        bands=("SNOW", "CLOUD"),
        dtype="uint16",
        pixel_size_m=10.24,
        size_px=10,
        kind="mask",
        temporal=True,
        dates_table="SENTINEL2",
        companion_of="s2",
        extra={"max_value": 100},
    ),
    Modality(
        key="s1_asc",
        sensor="SENTINEL1-ASC",
        datatype="TS",
        bands=("VV", "VH"),
        dtype="float32",
        pixel_size_m=10.24,
        size_px=10,
        temporal=True,
        dates_table="SENTINEL1-ASC",
        input_bands=("VV", "VH"),
        patch_size=2,
        num_dates=4,
        scaling=LogBackscatter(),
        norm_groups=(("VV",), ("VH",)),
        fusion_group="s1",
        display_bands=("VV",),
    ),
    Modality(
        key="s1_des",
        sensor="SENTINEL1-DESC",
        datatype="TS",
        bands=("VV", "VH"),
        dtype="float32",
        pixel_size_m=10.24,
        size_px=10,
        temporal=True,
        dates_table="SENTINEL1-DESC",
        input_bands=("VV", "VH"),
        patch_size=2,
        num_dates=4,
        scaling=LogBackscatter(),
        norm_groups=(("VV",), ("VH",)),
        fusion_group="s1",
        display_bands=("VV",),
    ),
    Modality(
        key="hist",
        sensor="AERIAL-RLT",
        datatype="PAN",
        bands=("PAN",),
        dtype="uint8",
        pixel_size_m=0.4,
        size_px=256,
        domain_year="195X",
        input_bands=("PAN",),
        patch_size=8,
        scaling=Divide(255.0),
        norm_groups=(("PAN",),),
        fusion_group="hist",
        mean=(125.92,),
        std=(38.45,),
        display_bands=("PAN",),
    ),
    Modality(
        key="elevation",
        sensor="AERIAL",
        datatype="ELEV-FLAIR2",
        bands=("ELEV",),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        input_bands=("ELEV",),
        patch_size=16,
        scaling=Divide(255.0),
        norm_groups=(("ELEV",),),
        fusion_group="elevation",
        display_bands=("ELEV",),
    ),
    Modality(
        key="lc",
        sensor="AERIAL",
        datatype="LABEL-COSIA",
        bands=("LC",),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        kind="label",
        label_set="lc",
    ),
    Modality(
        key="lpis",
        sensor="ALL",
        datatype="LABEL-LPIS",
        bands=("L1", "L2", "L3"),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        kind="label",
        label_set="lpis",
    ),
    Modality(
        key="flair2",
        sensor="AERIAL",
        datatype="LABEL-FLAIR2",
        bands=("CLASS",),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        kind="label",
        label_set="flair2",
    ),
    Modality(
        key="label",
        sensor="CUSTOM",
        datatype="LABEL",
        bands=("CLASS",),
        dtype="uint8",
        pixel_size_m=0.2,
        size_px=512,
        kind="label",
        # no label_set: the classes are the custom dataset's nomenclature YAML (maestro.nomenclature)
    ),
)


@dataclass(frozen=True)
class ModalityOverride:
    """Per-modality changes to the registry defaults; ``None`` keeps the registry value.

    The one override type of the suite: model configs and preprocessing configs both take
    ``{modality key: ModalityOverride}``, so what the model expects is what the data gives it.
    """

    bands: tuple[str, ...] | None = None
    """Bands fed to the network, in network order (default: the registry's ``input_bands``)."""
    patch_size: int | None = None
    image_size: int | None = None
    """Height = width of the input in pixels (default: the registry's ``size_px``)."""
    num_dates: int | None = None
    token_groups: tuple[tuple[str, ...], ...] | None = None
    """Band groups that get their own token (default: one group with all bands)."""

    def under(self, own: ModalityOverride) -> ModalityOverride:
        """This override with every field ``own`` sets replaced by ``own``'s (``own`` wins)."""
        changes = {f.name: getattr(own, f.name) for f in fields(own) if getattr(own, f.name) is not None}
        return replace(self, **changes)


MODALITIES: dict[str, Modality] = {m.key: m for m in _ENTRIES}
"""All known modalities by key."""

DEFAULT_INPUTS: tuple[str, ...] = ("aerial", "dem", "s2", "s1_asc", "s1_des")
"""FLAIR-HUB default MAESTRO inputs (SPOT and historical imagery are opt-in)."""


def get_modality(key: str) -> Modality:
    """Registry lookup with an error that lists the valid keys."""
    try:
        return MODALITIES[key]
    except KeyError:
        raise ConfigError(f"unknown modality {key!r}; valid keys are {sorted(MODALITIES)}") from None


def resolve(keys: Iterable[str]) -> list[Modality]:
    """Validate a list of modality keys (e.g. from a config or CLI) and return their entries."""
    keys = list(keys)
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ConfigError(f"modalities listed twice: {sorted(duplicates)}")
    return [get_modality(k) for k in keys]


def with_companions(keys: Iterable[str]) -> list[str]:
    """Add the mask modalities that belong to the requested images (``s2`` brings ``s2_mask``)."""
    keys = list(keys)
    for modality in _ENTRIES:
        if modality.companion_of in keys and modality.key not in keys:
            keys.append(modality.key)
    return keys


assert set(LABEL_SETS) >= {m.label_set for m in _ENTRIES if m.label_set}
