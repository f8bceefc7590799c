"""The dataset registry: one declarative :class:`Dataset` row per dataset the suite reads.

Like :mod:`maestro.modalities`, :mod:`maestro.tasks` and the model types, code reads these rows
instead of branching on a dataset's name: ``shards build --dataset`` opens the row's reader,
``shards toy --dataset`` runs its toy generator, and ``finetune`` takes the sizes a dataset's
rasters have (its ``overrides``: FLAIR #2's Sentinel-2 super-patch is 40 px where FLAIR-HUB's
Sentinel-2 patch is 10) from the row named in the shards' manifest.

The registry sits below the readers and never imports them (the pattern of
:mod:`maestro.models.registry`): a reader module attaches its factory when it is imported::

    @register_reader("flair2")
    def open_flair2(options: ReaderOptions) -> Flair2Reader: ...

and :mod:`maestro.data.zoo` imports every reader and toy module, for the commands that may open
any dataset. Loaded without torch or rasterio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from maestro.errors import ConfigError, DataError
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, ModalityOverride
from maestro.sample import Sample
from maestro.tasks import TASKS

DEFAULT_DATASET = "flair-hub"
"""What ``shards build`` reads, and what shards whose manifest names no dataset hold."""
CUSTOM_INPUTS: tuple[str, ...] = tuple(
    key for key, row in MODALITIES.items() if row.is_input and not row.temporal
)
"""Inputs a custom dataset may hold: the single-date images of the registry (a time series needs
its dates and cloud masks per date, which the custom layout does not describe yet)."""


class DatasetReader(Protocol):
    """One split of a dataset, one validated raw sample (:mod:`maestro.sample`) per patch.

    ``read`` raises :class:`~maestro.errors.DataError` naming the patch and the file; iteration
    may skip bad patches (counted in ``skipped``, kept in ``skipped_errors``). ``source_state``
    is what a shard build records per patch to notice changed inputs (:mod:`shards.sources`).
    """

    skipped: int
    skipped_errors: list[DataError]

    @property
    def patch_ids(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Sample]: ...

    def read(self, patch_id: str) -> Sample: ...

    def source_state(self, patch_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ReaderOptions:
    """What a shard build asks of any dataset's reader; a factory refuses what its dataset lacks."""

    root: Path
    split: str
    modalities: tuple[str, ...]
    """Registry keys to read (inputs, masks, labels), all in the dataset's row."""
    split_name: str | None = None
    """FLAIR-HUB: folder of the split CSVs under the root (None: the reader's default)."""
    split_csv: Path | None = None
    """FLAIR-HUB: an explicit split CSV."""
    allow_nan: bool = False
    data_config: Path | None = None
    """A custom dataset: its data config YAML (folders, patch CSV, nomenclature)."""


ReaderFactory = Callable[[ReaderOptions], DatasetReader]
ToyWriter = Callable[[Path, int, int], object]
"""(empty or new output folder, number of patches, seed) -> a summary to log."""
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ToyGenerator:
    """A dataset's synthetic tree in its exact on-disk layout (``shards toy --dataset``)."""

    write: ToyWriter
    patches: int
    """Default number of patches."""
    min_patches: int
    """Fewest patches that still fill every split."""


_READERS: dict[str, ReaderFactory] = {}
_TOYS: dict[str, ToyGenerator] = {}
_CONFIGURED: dict[str, Callable[[Path], Dataset]] = {}


@dataclass(frozen=True)
class Dataset:
    """Everything the suite knows about one dataset, apart from how its files are read."""

    key: str
    """Name on the command line (``shards build --dataset flair2``) and in manifests."""
    name: str
    """How shards and cards name real data of it (manifest ``dataset``; simulated data is ``toy``)."""
    description: str
    modalities: tuple[str, ...]
    """Registry keys of everything it holds: inputs, their masks, labels."""
    default_inputs: tuple[str, ...]
    """Inputs a model reads unless told otherwise."""
    tasks: tuple[str, ...]
    """Keys of :data:`maestro.tasks.TASKS` it can be fine-tuned on."""
    splits: tuple[str, ...]
    overrides: Mapping[str, ModalityOverride] = field(default_factory=dict)
    """Where its rasters differ from the modality registry (sizes, dates, bands)."""
    needs_config: bool = False
    """A template (``custom``): a user's data config YAML says which of its modalities a dataset
    holds, their sizes and its classes (:func:`configured_dataset`)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(k for k in self.modalities if MODALITIES[k].kind == "label")

    @property
    def build_modalities(self) -> tuple[str, ...]:
        """What ``shards build`` stores by default: the default inputs and every label (masks
        follow their images), so one build serves pretraining and fine-tuning."""
        return self.default_inputs + self.labels

    def image_size(self, key: str) -> int:
        """Height = width in pixels of ``key``'s rasters in this dataset."""
        override = self.overrides.get(key)
        if override is not None and override.image_size is not None:
            return override.image_size
        return MODALITIES[key].size_px

    def check_modalities(self, keys: tuple[str, ...] | list[str]) -> None:
        """Refuse keys this dataset does not hold (a ConfigError listing those it does)."""
        absent = [k for k in keys if k not in self.modalities]
        if absent:
            raise ConfigError(
                f"dataset {self.key!r} has no {absent}; its modalities are {list(self.modalities)}"
            )

    def open_reader(self, options: ReaderOptions) -> DatasetReader:
        """The registered reader of one split (its module must have been imported)."""
        self.check_modalities(options.modalities)
        try:
            factory = _READERS[self.key]
        except KeyError:
            raise ConfigError(
                f"no reader is registered for dataset {self.key!r}: import maestro.data.zoo, which "
                "imports every reader"
            ) from None
        return factory(options)

    @property
    def toy(self) -> ToyGenerator:
        """The registered toy generator (its module must have been imported)."""
        try:
            return _TOYS[self.key]
        except KeyError:
            raise ConfigError(
                f"no toy generator is registered for dataset {self.key!r}: import maestro.data.zoo"
            ) from None


DATASETS: dict[str, Dataset] = {
    row.key: row
    for row in (
        Dataset(
            key="flair-hub",
            name="FLAIR-HUB",
            description="FLAIR-HUB: aerial, DEM, SPOT, Sentinel-1/2 series and historical imagery, "
            "land cover and crop type labels",
            modalities=("aerial", "dem", "spot", "s2", "s2_mask", "s1_asc", "s1_des", "hist", "lc", "lpis"),
            default_inputs=DEFAULT_INPUTS,
            tasks=("lc", "lpis"),
            splits=("train", "val", "test"),
        ),
        Dataset(
            key="flair2",
            name="FLAIR #2",
            description="FLAIR #2 challenge release: 5-band aerial patches (RGBI + elevation), "
            "Sentinel-2 super-patches, 13 land-cover classes",
            modalities=("aerial", "elevation", "s2", "s2_mask", "flair2"),
            default_inputs=("aerial", "elevation", "s2"),
            tasks=("flair2",),
            splits=("train", "val", "test"),
            overrides={"s2": ModalityOverride(image_size=40), "s2_mask": ModalityOverride(image_size=40)},
        ),
        Dataset(
            key="custom",
            name="custom",
            description="your own dataset: a folder of GeoTIFF patches per modality, a CSV of patch ids "
            "and splits, a nomenclature YAML",
            modalities=CUSTOM_INPUTS + ("label",),
            default_inputs=("aerial",),
            tasks=("custom",),
            splits=("train", "val", "test"),
            needs_config=True,
        ),
    )
}
"""Every dataset by key."""


def _check_rows() -> None:
    """Rows name registry keys only (checked at import: a bad edit fails loudly)."""
    for row in DATASETS.values():
        unknown = [k for k in (*row.modalities, *row.overrides) if k not in MODALITIES]
        unknown += [k for k in row.tasks if k not in TASKS]
        if unknown or not set(row.default_inputs) <= set(row.modalities):
            raise AssertionError(f"dataset {row.key!r} names unknown or absent keys: {unknown}")
        for task in row.tasks:
            if TASKS[task].label_modality not in row.modalities:
                raise AssertionError(f"dataset {row.key!r}: task {task!r} reads a label it does not hold")


_check_rows()


def get_dataset(key: str) -> Dataset:
    """Registry lookup with an error that lists the valid keys."""
    try:
        return DATASETS[key]
    except KeyError:
        raise ConfigError(f"unknown dataset {key!r}; datasets are {sorted(DATASETS)}") from None


def register_reader(key: str) -> Callable[[F], F]:
    """Decorator: ``factory(options)`` opens one split of dataset ``key``."""
    row = get_dataset(key)

    def register(factory: F) -> F:
        known = _READERS.get(row.key)
        if known is not None and known.__qualname__ != factory.__qualname__:
            raise ConfigError(
                f"{row.key} already reads with {known.__qualname__}, not {factory.__qualname__}"
            )
        _READERS[row.key] = factory
        return factory

    return register


def register_toy(key: str, patches: int, min_patches: int) -> Callable[[F], F]:
    """Decorator: ``write(out, num_patches, seed)`` writes a toy tree of dataset ``key``."""
    row = get_dataset(key)

    def register(write: F) -> F:
        _TOYS[row.key] = ToyGenerator(write, patches, min_patches)
        return write

    return register


def register_configured(key: str) -> Callable[[F], F]:
    """Decorator: ``build(data_config)`` is the row of one user's dataset of template ``key``."""
    row = get_dataset(key)

    def register(build: F) -> F:
        _CONFIGURED[row.key] = build
        return build

    return register


def configured_dataset(key: str, data_config: Path | None = None) -> Dataset:
    """The row of dataset ``key``; for a template (``custom``) the row its ``data_config`` describes.

    A data config for a dataset that takes none, or none for one that needs it, is a ConfigError."""
    row = get_dataset(key)
    if not row.needs_config:
        if data_config is not None:
            raise ConfigError(
                f"--data-config describes your own dataset (--dataset custom); {row.name} reads none"
            )
        return row
    if data_config is None:
        raise ConfigError(
            f"dataset {row.key!r} is described by a data config YAML: pass --data-config (README, "
            "'Your own dataset')"
        )
    try:
        build = _CONFIGURED[row.key]
    except KeyError:
        raise ConfigError(
            f"no data config loader is registered for {row.key!r}: import maestro.data.zoo"
        ) from None
    return build(Path(data_config))


def dataset_of_manifest(key: str | None) -> Dataset:
    """The row a shard manifest's ``dataset_key`` names (manifests written before it: FLAIR-HUB)."""
    return get_dataset(key or DEFAULT_DATASET)
