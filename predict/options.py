"""What ``predict`` is asked to do, checked before anything heavy loads: options, device, paths.

Only the command line and the file system are read here (no torch, no raster), so a mistyped flag
or path is refused at once instead of after the seconds torch and the model take to load; the
engine and the model loader check the same things again with these functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from maestro.errors import ConfigError
from maestro.hub.sources import BEST, Source, SourceKind, resolve_source

ProbabilityType = Literal["uint8", "float16"]
MODEL_SOURCES: tuple[SourceKind, ...] = ("run", "folder", "hub")
"""What ``--model`` takes: a fine-tuning run, a model folder, or a Hub model."""


@dataclass(frozen=True)
class PredictOptions:
    overlap: float = 0.25
    """Fraction of a tile shared with each neighbour; overlapping logits are blended."""
    batch_size: int = 8
    probabilities: ProbabilityType | None = None
    """Also write per-class probabilities (``{out}_probabilities.tif``) as uint8 or float16."""
    cloud_avoidance: bool = True
    workers: int = 2
    """Threads reading and preprocessing tiles."""
    buffer_mib: int = 1024
    """Memory for the blending buffers; wider zones are processed in column chunks."""
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.probabilities not in (None, "uint8", "float16"):
            raise ConfigError(f"--probabilities must be uint8 or float16, got {self.probabilities!r}")
        if self.buffer_mib < 1:
            raise ConfigError(f"buffer_mib must be >= 1, got {self.buffer_mib}")


def check_device_name(name: str) -> None:
    """``cpu`` or ``cuda[:N]``; whether a GPU is there is the engine's to say (it needs torch)."""
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {name!r}")


def find_model(spec: str) -> Source:
    """What ``--model`` names (:mod:`maestro.hub.sources`); a run must be a fine-tuning run with
    its ``best.ckpt``, the checkpoint a run is mapped with."""
    source = resolve_source(spec, kinds=MODEL_SOURCES, user="--model")
    if source.kind == "run" and not (source.path / BEST).is_file():
        raise FileNotFoundError(
            f"{source.path} is a fine-tuning run without {BEST} (was it trained with a validation split?)"
        )
    return source


def check_zone(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"--zone {root}: no such directory")


def probabilities_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_probabilities{out.suffix}")


def check_output(out: Path, overwrite: bool, probabilities: bool) -> Path:
    """The resolved output path; refuses what is not a GeoTIFF name, would replace a file silently
    or cannot be written (nothing is created: the engine makes the folder when it starts)."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"--out {out}: the map is a GeoTIFF, give a .tif path")
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a directory; give a file path such as {out / 'map.tif'}")
    targets = [out, probabilities_path(out)] if probabilities else [out]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    folder = out.absolute().parent
    while not folder.exists():  # the first folder that exists is where the others would be made
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {folder} is not writable")
    return out.resolve()
