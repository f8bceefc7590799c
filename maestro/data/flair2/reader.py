"""FLAIR #2 reader: one aerial patch + its Sentinel-2 super-patch -> one raw sample dict.

Mirrors :class:`maestro.data.flairhub.FlairHubReader` (``__len__``, ``__iter__``, ``read``,
``patch_ids``, ``skipped``, ``skipped_errors``) on the challenge release layout of
:mod:`maestro.data.flair2.layout`. Sample (layout of :mod:`maestro.sample`)::

    aerial (4, 512, 512) uint8 R,G,B,NIR   elevation (1, 512, 512) uint8
    s2 (T, 10, s, s) uint16                s2_mask (T, 2, s, s) snow, cloud 0..100   (s = super_patch)
    flair2 (1, 512, 512) uint8 grouped classes 0..12 (12 = other, ignored)
    dates {"s2": (T,) int32 YYYYMMDD from the products file, "aerial": (1,) from the metadata}
    meta {patch_id, domain, zone, roi (= zone), split, rasters: {key: {path, ...}}, aerial_metadata}

Splits: ``train`` and ``test`` are the release's folders; ``val`` takes a ``val_fraction`` of the
train *domains* (a seeded shuffle of the sorted domain names, as the baseline holds out whole
domains, though it reshuffles unseeded every run) and ``train`` keeps the others. Test labels
are read when the test labels folder exists (the challenge withheld them at first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from maestro.data.flair2 import layout, nomenclature, series
from maestro.data.split_reader import OnError, SplitReader
from maestro.datasets import ReaderOptions, register_reader
from maestro.errors import ConfigError, DataError
from maestro.sample import DATES, META, Sample

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("aerial", "elevation", "s2")
LABEL_KEY = "flair2"
_RASTER_ERRORS = (RasterioError, OSError)


@dataclass(frozen=True)
class Flair2Patch:
    """Where one patch's files are (absolute paths)."""

    patch_id: str
    domain: str
    zone: str
    image: Path
    mask: Path | None
    sen: dict[str, Path]


def split_domains(domains: Iterable[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) domains: a seeded shuffle of the sorted names, ``round(n * val_fraction)`` to val
    (at least one and at most n - 1 when there are two or more domains)."""
    names = sorted(domains)
    n = len(names)
    n_val = min(max(round(n * val_fraction), 1), n - 1) if n > 1 and val_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(names[i] for i in order[:n_val])
    return [d for d in names if d not in val], val


def scan_patches(root: Path, folder_split: str) -> list[Flair2Patch]:
    """Every ``IMG_*.tif`` of a release split, in domain, zone, patch-id order."""
    folders = layout.SPLIT_FOLDERS[folder_split]
    aerial_root = layout.first_existing(root, folders.aerial)
    labels_root = layout.first_existing(root, folders.labels)
    sen_root = layout.first_existing(root, folders.sen)
    if not aerial_root.is_dir():
        raise DataError(f"no aerial folder for the {folder_split!r} split", path=aerial_root)
    has_labels = labels_root.is_dir()
    patches = []
    for domain_dir in sorted(p for p in aerial_root.iterdir() if p.is_dir()):
        for zone_dir in sorted(p for p in domain_dir.iterdir() if p.is_dir()):
            images = sorted((zone_dir / layout.AERIAL_SUBDIR).glob("IMG_*.tif"))
            for image in images:
                patch_id = layout.patch_id_of(image)
                if patch_id is None:
                    continue
                domain, zone = domain_dir.name, zone_dir.name
                mask = layout.mask_path(labels_root, domain, zone, patch_id) if has_labels else None
                sen = layout.sen_files(sen_root, domain, zone)
                patches.append(Flair2Patch(patch_id, domain, zone, image, mask, sen))
    return patches


class Flair2Reader(SplitReader):
    """Map-style access to one split of the FLAIR #2 release, one validated sample per patch.

    ``read(patch_id)`` always raises :class:`DataError` on bad data; iteration honours
    ``on_error`` (``'skip'`` logs, counts in :attr:`skipped` and keeps :attr:`skipped_errors`).
    ``cloud_filter`` drops dates whose super-patch is covered (snow or cloud probability >=
    ``cloud_probability`` on more than ``cloud_area`` of it, :func:`series.cloud_keep`);
    ``monthly`` then replaces the kept dates by one mean per month dated on the 15th.
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        modalities: Iterable[str] = MODALITIES,
        super_patch: int = layout.DEFAULT_SUPER_PATCH,
        cloud_filter: bool = True,
        monthly: bool = False,
        on_error: OnError = "raise",
        val_fraction: float = 0.2,
        split_seed: int = 0,
        cloud_probability: int = series.CLOUD_PROBABILITY,
        cloud_area: float = series.CLOUD_AREA,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {split!r}")
        self.modalities = tuple(modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown FLAIR #2 modalities {sorted(unknown)}; known: {MODALITIES}")
        if super_patch < 2 or super_patch % 2:
            raise ValueError(f"super_patch must be an even number of pixels >= 2, got {super_patch}")
        self.root = Path(root)
        self.split = split
        self.super_patch = super_patch
        self.cloud_filter = cloud_filter
        self.monthly = monthly
        self.on_error: OnError = on_error
        self.cloud_probability = cloud_probability
        self.cloud_area = cloud_area
        self.skipped = 0
        self.skipped_errors: list[DataError] = []
        patches = scan_patches(self.root, "test" if split == "test" else "train")
        if split != "test":
            train, val = split_domains({p.domain for p in patches}, val_fraction, split_seed)
            keep = set(val if split == "val" else train)
            patches = [p for p in patches if p.domain in keep]
        self._patches = {p.patch_id: p for p in patches}
        self._ids = [p.patch_id for p in patches]
        self.centroids_path = layout.first_existing(self.root, layout.CENTROIDS_FILES)
        self._centroids = self._load_json(self.centroids_path) if "s2" in self.modalities else {}
        self.metadata_path = self.root / layout.METADATA_FILE
        self._metadata = self._load_json(self.metadata_path) if self.metadata_path.is_file() else {}
        log.info(
            "FLAIR #2 %s split of %s: %d patches, modalities %s", split, root, len(self._ids), self.modalities
        )

    @staticmethod
    def _load_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as error:
            raise DataError("file not found", path=path) from error
        except (OSError, ValueError) as error:
            raise DataError(f"unreadable JSON ({error})", path=path) from error
        if not isinstance(data, dict):
            raise DataError("expected a JSON object keyed by patch file name", path=path)
        return data

    def source_state(self, patch_id: str) -> dict[str, Any]:
        """What a patch is read from, as JSON (:mod:`shards.sources`): path, size and mtime_ns of its
        image, mask and super-area files (``None`` when absent), and its super-patch centroid, so a
        resumed shard build notices an edited or fixed file."""
        patch = self._patches.get(patch_id)
        if patch is None:
            return {}
        files: dict[str, Path | None] = {"aerial": patch.image, LABEL_KEY: patch.mask}
        if "s2" in self.modalities:
            files.update({f"s2_{kind}": path for kind, path in patch.sen.items()})
        state: dict[str, Any] = {}
        for key, path in files.items():
            if path is None:
                state[key] = None
                continue
            try:
                stat = path.stat()
                state[key] = [self._rel(path), stat.st_size, stat.st_mtime_ns]
            except OSError:
                state[key] = [self._rel(path), None, None]
        if "s2" in self.modalities:
            state["dates:centroid"] = self._centroids.get(layout.centroid_key(patch_id))
        return state

    def _rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------------------------ one patch

    def read(self, patch_id: str) -> Sample:
        """The sample of one patch; raises DataError naming the patch and the file on bad data."""
        patch = self._patches.get(patch_id)
        if patch is None:
            raise DataError(f"patch is not in the {self.split!r} split", patch_id=patch_id, path=self.root)
        sample: Sample = {}
        rasters: dict[str, dict[str, Any]] = {}
        dates: dict[str, np.ndarray] = {}
        if "aerial" in self.modalities or "elevation" in self.modalities:
            image, georef = self._read_tif(patch.image, patch_id, len(layout.AERIAL_BANDS), "aerial image")
            for key, bands in (("aerial", slice(0, 4)), ("elevation", slice(4, 5))):
                if key in self.modalities:
                    sample[key] = image[bands]
                    rasters[key] = {"path": self._rel(patch.image), **georef}
        if patch.mask is not None:
            raw, georef = self._read_tif(patch.mask, patch_id, 1, "label mask")
            sample[LABEL_KEY] = self._group(raw, patch_id, patch.mask)
            rasters[LABEL_KEY] = {"path": self._rel(patch.mask), **georef}
        elif self.split != "test":
            raise DataError("label mask folder is missing", patch_id=patch_id, path=self.root)
        if "s2" in self.modalities:
            s2, s2_mask, s2_dates, window = self._read_series(patch)
            # Release masks are uint8 probabilities; shards store masks in the registry's dtype.
            sample["s2"], sample["s2_mask"], dates["s2"] = s2, s2_mask.astype(np.uint16), s2_dates
            rasters["s2"] = {
                "path": self._rel(patch.sen["data"]),
                "masks": self._rel(patch.sen["masks"]),
                "products": self._rel(patch.sen["products"]),
                "window": window,
            }
        aerial_meta = self._metadata.get(layout.metadata_key(patch_id))
        if aerial_meta is not None and ("aerial" in sample or "elevation" in sample):
            day = layout.product_date(str(aerial_meta.get("date", "")).replace("-", ""))
            if day is not None:
                for key in ("aerial", "elevation"):
                    if key in sample:
                        dates[key] = np.array([day], dtype=np.int32)
        sample[DATES] = dates
        sample[META] = {
            "patch_id": patch_id,
            "domain": patch.domain,
            "zone": patch.zone,
            "roi": patch.zone,
            "split": self.split,
            "rasters": rasters,
            "aerial_metadata": aerial_meta,
        }
        return sample

    def _read_tif(
        self, path: Path, patch_id: str, bands: int, what: str
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if not path.is_file():
            raise DataError(f"{what}: file not found", patch_id=patch_id, path=path)
        size = layout.AERIAL_SIZE_PX
        try:
            with rasterio.open(path) as src:
                if src.count != bands:
                    raise DataError(
                        f"{what}: expected {bands} bands, got {src.count}", patch_id=patch_id, path=path
                    )
                if (src.height, src.width) != (size, size):
                    raise DataError(
                        f"{what}: expected {size}x{size} pixels, got {src.height}x{src.width}",
                        patch_id=patch_id,
                        path=path,
                    )
                if set(src.dtypes) != {layout.AERIAL_DTYPE}:
                    raise DataError(
                        f"{what}: expected dtype uint8, got {', '.join(sorted(set(src.dtypes)))}",
                        patch_id=patch_id,
                        path=path,
                    )
                array = src.read()
                crs = src.crs.to_string() if src.crs is not None else None
                transform = tuple(float(v) for v in src.transform[:6])
        except _RASTER_ERRORS as error:
            raise DataError(f"{what}: unreadable GeoTIFF ({error})", patch_id=patch_id, path=path) from error
        return array, {"crs": crs, "transform": transform}

    @staticmethod
    def _group(raw: np.ndarray, patch_id: str, path: Path) -> np.ndarray:
        grouped = nomenclature.group_labels(raw)
        bad = grouped == nomenclature.INVALID
        if bad.any():
            values = sorted(int(v) for v in np.unique(raw[bad]))
            raise DataError(
                f"label mask holds values {values[:10]} outside the 19 FLAIR #2 values 1..19",
                patch_id=patch_id,
                path=path,
            )
        return grouped

    def _load_npy(self, path: Path, patch_id: str, bands: int, what: str) -> np.ndarray:
        if not path.is_file():
            raise DataError(f"{what}: file not found", patch_id=patch_id, path=path)
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DataError(f"{what}: unreadable .npy ({error})", patch_id=patch_id, path=path) from error
        if array.ndim != 4 or array.shape[1] != bands:
            raise DataError(
                f"{what}: expected an array (T, {bands}, H, W), got shape {tuple(array.shape)}",
                patch_id=patch_id,
                path=path,
            )
        return array

    def _read_dates(self, path: Path, patch_id: str, num_dates: int) -> np.ndarray:
        if not path.is_file():
            raise DataError("Sentinel-2 products: file not found", patch_id=patch_id, path=path)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != num_dates:
            raise DataError(
                f"Sentinel-2 products: {len(names)} product names but the super-area data has {num_dates} dates",
                patch_id=patch_id,
                path=path,
            )
        days = []
        for number, name in enumerate(names, start=1):
            day = layout.product_date(name)
            if day is None:
                raise DataError(
                    f"Sentinel-2 products: line {number} ({name!r}) holds no YYYYMMDD date",
                    patch_id=patch_id,
                    path=path,
                )
            days.append(day)
        return np.array(days, dtype=np.int32)

    def _read_series(self, patch: Flair2Patch) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
        patch_id, files = patch.patch_id, patch.sen
        data = self._load_npy(files["data"], patch_id, len(layout.S2_BANDS), "Sentinel-2 data")
        masks = self._load_npy(files["masks"], patch_id, len(layout.S2_MASK_BANDS), "Sentinel-2 masks")
        if masks.shape[0] != data.shape[0] or masks.shape[2:] != data.shape[2:]:
            raise DataError(
                f"Sentinel-2 masks: shape {tuple(masks.shape)} does not match the data {tuple(data.shape)} "
                f"({files['data'].name})",
                patch_id=patch_id,
                path=files["masks"],
            )
        dates = self._read_dates(files["products"], patch_id, int(data.shape[0]))
        centroid = self._centroids.get(layout.centroid_key(patch_id))
        if not (isinstance(centroid, list | tuple) and len(centroid) == 2):
            raise DataError(
                f"no super-patch centroid [row, col] for {layout.centroid_key(patch_id)} (got {centroid!r})",
                patch_id=patch_id,
                path=self.centroids_path,
            )
        window = series.crop_window((int(centroid[0]), int(centroid[1])), self.super_patch)
        height, width = int(data.shape[2]), int(data.shape[3])
        if not series.window_inside(window, height, width):
            r0, r1, c0, c1 = window
            raise DataError(
                f"super-patch rows {r0}..{r1}, cols {c0}..{c1} around centroid {list(centroid)} falls outside "
                f"the {height}x{width} super-area of {files['data'].name}",
                patch_id=patch_id,
                path=self.centroids_path,
            )
        r0, r1, c0, c1 = window
        try:
            s2 = np.array(data[:, :, r0:r1, c0:c1])
            s2_mask = np.array(masks[:, :, r0:r1, c0:c1])
        except (OSError, ValueError) as error:
            raise DataError(
                f"Sentinel-2: truncated .npy ({error})", patch_id=patch_id, path=files["data"]
            ) from error
        if s2_mask.size and int(s2_mask.max()) > layout.S2_MASK_MAX:
            raise DataError(
                f"Sentinel-2 masks: probability {int(s2_mask.max())} above {layout.S2_MASK_MAX}",
                patch_id=patch_id,
                path=files["masks"],
            )
        if self.cloud_filter:
            keep = series.cloud_keep(s2_mask, self.cloud_probability, self.cloud_area)
            s2, s2_mask, dates = s2[keep], s2_mask[keep], dates[keep]
        if self.monthly:
            s2, s2_mask, dates = series.monthly_means(s2, s2_mask, dates)
        return s2, s2_mask, dates, window


@register_reader("flair2")
def open_flair2(options: ReaderOptions) -> Flair2Reader:
    """``shards build --dataset flair2``: one split of the release (val: held-out train domains),
    with the baseline's defaults (40 px super-patch, cloud filter). Its splits are the release's
    folders, so a split CSV is refused rather than ignored."""
    if options.split_csv is not None:
        raise ConfigError(
            f"--split-csv {options.split_csv}: FLAIR #2 splits come from the release's folders "
            f"({', '.join(layout.SPLITS)}); a split CSV is a FLAIR-HUB option"
        )
    if options.split not in layout.SPLITS:
        raise ConfigError(f"FLAIR #2 has splits {list(layout.SPLITS)}, not {options.split!r}")
    return Flair2Reader(
        options.root, split=options.split, modalities=[k for k in options.modalities if k in MODALITIES]
    )
