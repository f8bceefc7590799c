"""A custom dataset's data config: which folders hold which modality, the patch CSV, the classes.

::

    name: Bocage hedgerows          # how manifests and model cards name it
    patches: patches.csv            # patch_id,split[,date]  (date: YYYY-MM-DD, the acquisition)
    nomenclature: nomenclature.yaml # maestro.nomenclature
    labels: {folder: labels}        # labels/<patch_id>.tif, one uint8 band
    inputs:                         # registry modality -> folder of <patch_id>.tif
      aerial: {folder: aerial}      # R, G, B, NIR uint8 at 0.2 m, as the registry's aerial
      dem: {folder: dem, image_size: 512}
    date: 2021-06-15                # acquisition date of every patch, when patches.csv has no date

Paths are relative to the YAML's folder. Every input keeps the registry's bands, data type and
resolution (an aerial patch of 256 px covers 51.2 m); ``image_size`` (default: the registry's) is
the side of its patches, and all rasters of a patch must cover the same ground (the reader checks
their bounds). Loaded strictly (a typo fails at start) and without rasterio or torch: the
commands check it before reading any raster.
"""

from __future__ import annotations

import csv
import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from maestro.config import ConfigMixin, from_dict, load_yaml
from maestro.datasets import CUSTOM_INPUTS, Dataset, get_dataset, register_configured
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, ModalityOverride
from maestro.nomenclature import Nomenclature, load_nomenclature

KEY = "custom"
LABEL_KEY = "label"
_SPLIT = re.compile(r"^[A-Za-z0-9_-]+$")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


@dataclass(frozen=True)
class RasterFolder(ConfigMixin):
    folder: Path
    """Folder of ``<patch_id>.tif``, relative to the data config."""
    image_size: int | None = None
    """Height = width of its patches in pixels (None: the registry's size)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size: {self.image_size} must be >= 1")


@dataclass(frozen=True)
class CustomDataConfig(ConfigMixin):
    """The data config YAML as written (paths relative to its folder)."""

    inputs: Mapping[str, RasterFolder]
    labels: RasterFolder
    patches: Path = Path("patches.csv")
    nomenclature: Path = Path("nomenclature.yaml")
    name: str = "custom"
    date: str | None = None
    """Acquisition date (YYYY-MM-DD) of patches whose CSV row has none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "patches", Path(self.patches))
        object.__setattr__(self, "nomenclature", Path(self.nomenclature))
        object.__setattr__(self, "inputs", dict(self.inputs))
        if not self.inputs:
            raise ConfigError(f"inputs: at least one of {list(CUSTOM_INPUTS)} is required")
        unknown = [key for key in self.inputs if key not in MODALITIES]
        series = [key for key in self.inputs if key in MODALITIES and MODALITIES[key].temporal]
        other = [key for key in self.inputs if key in MODALITIES and key not in CUSTOM_INPUTS + tuple(series)]
        if unknown or other:
            raise ConfigError(
                f"inputs: {unknown + other} are not input modalities; a custom dataset takes "
                f"{list(CUSTOM_INPUTS)}"
            )
        if series:
            raise ConfigError(
                f"inputs: time series {series} are not supported in a custom dataset yet (their "
                f"dates and cloud masks per date have no place in its layout); it takes {list(CUSTOM_INPUTS)}"
            )
        if not self.name.strip():
            raise ConfigError("name: must not be empty")
        if self.date is not None:
            parse_date(self.date, "date")


def parse_date(text: str, where: str) -> int:
    """``YYYY-MM-DD`` (or ``YYYYMMDD``) -> the int ``YYYYMMDD`` samples carry; a ConfigError otherwise."""
    match = _DATE.match(str(text).strip())
    if match is not None:
        year, month, day = (int(part) for part in match.groups())
        if 1 <= month <= 12 and 1 <= day <= 31 and 1950 <= year <= 2100:
            return year * 10_000 + month * 100 + day
    raise ConfigError(f"{where}: {text!r} is not a date YYYY-MM-DD")


@dataclass(frozen=True)
class PatchRow:
    patch_id: str
    split: str
    date: int
    """YYYYMMDD."""


@dataclass(frozen=True)
class CustomData:
    """A loaded data config: absolute folders, the checked patch table and the nomenclature."""

    path: Path
    """The data config YAML."""
    config: CustomDataConfig
    nomenclature: Nomenclature
    patches: tuple[PatchRow, ...] = field(repr=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.config.inputs)

    def folder(self, key: str) -> Path:
        """Folder of ``key``'s rasters (an input, or :data:`LABEL_KEY`)."""
        entry = self.config.labels if key == LABEL_KEY else self.config.inputs[key]
        return self.root / entry.folder

    def raster(self, key: str, patch_id: str) -> Path:
        return self.folder(key) / f"{patch_id}.tif"

    def image_size(self, key: str) -> int:
        entry = self.config.labels if key == LABEL_KEY else self.config.inputs[key]
        return entry.image_size or MODALITIES[key].size_px

    def split(self, name: str) -> list[PatchRow]:
        return [row for row in self.patches if row.split == name]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.split for row in self.patches))

    def dataset(self) -> Dataset:
        """The ``custom`` row for this dataset: its name, inputs and sizes."""
        keys = (*self.inputs, LABEL_KEY)
        overrides = {
            key: ModalityOverride(image_size=self.image_size(key))
            for key in keys
            if self.image_size(key) != MODALITIES[key].size_px
        }
        template = get_dataset(KEY)
        return Dataset(
            key=template.key,
            name=self.config.name,
            description=f"{self.config.name} (your own dataset, {self.path})",
            modalities=keys,
            default_inputs=self.inputs,
            tasks=template.tasks,
            splits=self.splits,
            overrides=overrides,
            needs_config=True,
        )


def read_patch_table(path: Path, default_date: int | None) -> tuple[PatchRow, ...]:
    """``patch_id,split[,date]`` rows; a missing column, an empty or repeated id, a bad split name
    or date is a ConfigError naming the file and line."""
    if not path.is_file():
        raise ConfigError(f"patch table {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in ("patch_id", "split") if name not in columns]
        if missing:
            raise ConfigError(f"patch table {path}: no {missing} column (columns: {columns})")
        if "date" not in columns and default_date is None:
            raise ConfigError(
                f"patch table {path} has no date column and the data config no `date`: give the "
                "acquisition date of the patches (YYYY-MM-DD), it dates their tokens"
            )
        rows, seen = [], {}
        for line, record in enumerate(reader, start=2):
            patch_id, split = (record.get("patch_id") or "").strip(), (record.get("split") or "").strip()
            where = f"patch table {path}, line {line}"
            if not patch_id or "/" in patch_id or patch_id.startswith("."):
                raise ConfigError(f"{where}: patch_id {patch_id!r} is not a file name")
            if patch_id in seen:
                raise ConfigError(
                    f"{where}: patch {patch_id} is listed again (first on line {seen[patch_id]})"
                )
            if not _SPLIT.match(split):
                raise ConfigError(f"{where}: split {split!r} must be a plain name such as train, val, test")
            text = (record.get("date") or "").strip()
            date = parse_date(text, where) if text else default_date
            if date is None:
                raise ConfigError(f"{where}: no date, and the data config gives no default `date`")
            seen[patch_id] = line
            rows.append(PatchRow(patch_id, split, date))
    if not rows:
        raise ConfigError(f"patch table {path} lists no patch")
    return tuple(rows)


def load_custom_data(path: Path) -> CustomData:
    """Read and check a data config YAML, its patch table and nomenclature (ConfigErrors name the file)."""
    path = Path(path)
    raw = load_yaml(path, "data config")
    if not isinstance(raw, dict):
        raise ConfigError(f"data config {path}: expected a mapping, got {type(raw).__name__}")
    if isinstance(raw.get("date"), datetime.date):  # YAML reads an unquoted 2021-06-15 as a date
        raw["date"] = raw["date"].isoformat()
    try:
        config = from_dict(CustomDataConfig, raw)
    except ConfigError as error:
        raise ConfigError(f"data config {path}: {error}") from None
    root = path.parent
    default = parse_date(config.date, f"data config {path}: date") if config.date is not None else None
    return CustomData(
        path=path,
        config=config,
        nomenclature=load_nomenclature(root / config.nomenclature),
        patches=read_patch_table(root / config.patches, default),
    )


@register_configured(KEY)
def custom_dataset(path: Path) -> Dataset:
    """The registry row of the dataset a data config describes (``--dataset custom --data-config``)."""
    return load_custom_data(path).dataset()
