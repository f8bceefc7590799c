"""The output files: strips streamed into temporary GeoTIFFs, published only when complete.

Everything is written inside the output's directory: ``.{name}.{id}.stream.tif`` (tiled, written
strip by strip, each block once) and, for a map, ``.{name}.{id}.cog.tif`` (its Cloud-Optimised
copy with overviews), renamed over the output at the very end. A unit's file is the stream itself,
renamed into place (:meth:`MapWriter.commit` with ``cog=False``): the mosaic reads it once more,
so overviews there would be wasted. Any failure removes them: a file either appears complete or
not at all. The class map is uint8 with nodata 255, a colour table, the class
names in its metadata and mode-resampled overviews; ``--probabilities`` adds a second file with one
band per class (uint8 0-255, or half floats with NaN as nodata), nearest-resampled overviews.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.shutil import copy as copy_raster
from rasterio.windows import Window

from maestro.labels import RGB
from predict.options import ProbabilityType, probabilities_path
from predict.tiling import Grid

log = logging.getLogger(__name__)

NODATA = 255
BLOCK = 256
"""Block side of the streamed files; strips and chunks are whole blocks, so each is written once."""
GDAL_ENV = {"GDAL_PAM_ENABLED": "NO"}
"""No .aux.xml side files next to the output or the zone rasters."""


def _padding_warnings(record: logging.LogRecord) -> bool:
    """Drop GDAL's "beyond range of float16" warnings: half-float COGs convert whole edge blocks,
    whose padding beyond the raster holds arbitrary values; the pixels of the map are exact."""
    return "beyond range of float16" not in record.getMessage()


def write_cog(source: Path, dest: Path, probability_type: ProbabilityType | None = None) -> None:
    """``source`` (any raster GDAL reads) copied into the COG ``dest``: a class map (``None``) gets
    mode-resampled overviews, probabilities nearest ones (half floats stored in 16 bits)."""
    options: dict[str, Any] = {"OVERVIEW_RESAMPLING": "MODE" if probability_type is None else "NEAREST"}
    if probability_type == "float16":
        options["NBITS"] = 16
    gdal_log = logging.getLogger("rasterio._env")
    gdal_log.addFilter(_padding_warnings)
    try:
        copy_raster(
            str(source),
            str(dest),
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=512,
            BIGTIFF="IF_SAFER",
            **options,
        )
    finally:
        gdal_log.removeFilter(_padding_warnings)


class MapWriter:
    """Streams strips of the class map (and probabilities) and publishes them on :meth:`commit`.

    Use as a context manager (inside ``rasterio.Env(**GDAL_ENV)``): leaving it on an exception
    removes every temporary file.
    """

    def __init__(
        self,
        out: Path,
        grid: Grid,
        class_names: tuple[str, ...],
        colours: tuple[RGB, ...],
        tags: Mapping[str, Any],
        probabilities: ProbabilityType | None = None,
    ):
        self.out, self.grid, self.class_names = out, grid, class_names
        self.probability_type = probabilities
        self.token = uuid.uuid4().hex[:8]
        self._temporary: list[Path] = []
        self._open_files: list[Any] = []
        self.map_stream = self._temp(out, "stream")
        self.prob_stream = self._temp(probabilities_path(out), "stream") if probabilities else None
        self.colours, self.tags = colours, tags
        self.map: Any = None
        self.prob: Any = None

    def __enter__(self) -> MapWriter:
        try:
            self._start()
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is not None:
            self.abort()

    def _start(self) -> None:
        self.map = self._open(self.map_stream, 1, "uint8", NODATA)
        self.map.write_colormap(1, {v: (*rgb, 255) for v, rgb in enumerate(self.colours)})
        self.map.set_band_description(1, "class")
        self.map.update_tags(
            **{k: str(v) for k, v in self.tags.items()},
            class_names=json.dumps(list(self.class_names)),
            **{f"class_{v}": name for v, name in enumerate(self.class_names)},
            nodata_meaning=f"{NODATA}: an input was nodata or outside the zone",
        )
        if self.prob_stream is not None:
            half = self.probability_type == "float16"  # half floats: float32 values stored with NBITS=16
            self.prob = self._open(
                self.prob_stream,
                len(self.class_names),
                "float32" if half else "uint8",
                float("nan") if half else None,
                nbits=16 if half else None,
            )
            for band, name in enumerate(self.class_names, start=1):
                self.prob.set_band_description(band, name)
            self.prob.update_tags(
                **{k: str(v) for k, v in self.tags.items()},
                scale="probability" if half else "probability x 255",
                nodata_meaning="NaN where the map is nodata"
                if half
                else "0 in every band where the map is nodata",
            )

    def _temp(self, final: Path, kind: str) -> Path:
        path = final.with_name(f".{final.name}.{self.token}.{kind}.tif")
        self._temporary.append(path)
        return path

    def _open(
        self, path: Path, count: int, dtype: str, nodata: float | None, nbits: int | None = None
    ) -> Any:
        grid = self.grid
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": count,
            "dtype": dtype,
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
            "zlevel": 1,
            "bigtiff": "IF_SAFER",
            "interleave": "band",
        }
        if nbits is not None:
            profile["nbits"] = nbits
        dataset = rasterio.open(path, "w", **profile)
        self._open_files.append(dataset)
        return dataset

    def write(self, row: int, col: int, classes: np.ndarray, probabilities: np.ndarray | None) -> None:
        """Write one strip: (h, w) uint8 classes and, when kept, (K, h, w) probabilities, either in
        [0, 1] (float32, encoded here) or already in the file's encoding (uint8 0-255, or float16:
        :func:`predict.blending.encode_probabilities` does it on the device, so fewer bytes cross
        to the host)."""
        window = Window(col, row, classes.shape[1], classes.shape[0])
        self.map.write(classes, 1, window=window)
        if self.prob is not None and probabilities is not None:
            if probabilities.dtype == np.uint8 or probabilities.dtype == np.float16:
                values = (
                    probabilities.astype(np.float32) if probabilities.dtype == np.float16 else probabilities
                )
            elif self.probability_type == "uint8":  # NaN (nodata) -> 0, before the cast
                values = np.rint(np.nan_to_num(probabilities, nan=0.0) * 255.0).astype(np.uint8)
            else:
                values = probabilities.astype(np.float16).astype(np.float32)
            self.prob.write(values, window=window)

    def commit(self, cog: bool = True) -> list[Path]:
        """Close the streams, convert them to COGs next to the output (``cog``; else keep them as
        they are), rename them into place, the class map last."""
        for dataset in self._open_files:
            dataset.close()
        if not cog:
            streams = [(self.map_stream, self.out)]
            if self.prob_stream is not None:
                streams.append((self.prob_stream, probabilities_path(self.out)))
            for stream, final in reversed(streams):
                os.replace(stream, final)
            self._remove_temporary()
            return [final for _, final in streams]
        published: list[tuple[Path, Path, ProbabilityType | None]] = [(self.map_stream, self.out, None)]
        if self.prob_stream is not None:
            published.append((self.prob_stream, probabilities_path(self.out), self.probability_type))
        ready = []
        for stream, final, kind in published:
            cog = self._temp(final, "cog")
            write_cog(stream, cog, kind)
            ready.append((cog, final))
        for cog, final in reversed(ready):  # the class map last: its presence means the run completed
            os.replace(cog, final)
        self._remove_temporary()
        return [final for _, final in ready]

    def abort(self) -> None:
        """Close and remove everything written so far."""
        for dataset in self._open_files:
            if not dataset.closed:
                dataset.close()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        for path in self._temporary:
            for leftover in (path, path.with_name(path.name + ".ovr.tmp")):
                leftover.unlink(missing_ok=True)
