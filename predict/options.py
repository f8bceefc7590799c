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
UNIT_ALIGN = 256
"""Units' edges fall on multiples of the output files' block side (:data:`predict.writing.BLOCK`)."""


@dataclass(frozen=True)
class PredictOptions:
    overlap: float = 0.25
    """Fraction of a tile shared with each neighbour; overlapping logits are blended."""
    batch_size: int | None = None
    """Tiles per batch; ``None``: 8 on CPU, 32 on a GPU, halved while a forward pass runs out of memory."""
    probabilities: ProbabilityType | None = None
    """Also write per-class probabilities (``{out}_probabilities.tif``) as uint8 or float16."""
    cloud_avoidance: bool = True
    workers: int | None = None
    """Processes reading and preprocessing tiles; ``None``: the cores of this process's share of
    the node, less two; 0 reads them in the mapping process itself."""
    compile: bool = False
    """``torch.compile`` the network (the last batch of a unit is padded: one shape compiles once)."""
    overwrite: bool = False
    progress: bool = True
    unit_px: int = 10240
    """Side of a work unit in output pixels (a multiple of 256): what is scheduled, written,
    recorded as done and resumed (2.048 km at 0.2 m); its blending buffer is one unit wide."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        if self.probabilities not in (None, "uint8", "float16"):
            raise ConfigError(f"--probabilities must be uint8 or float16, got {self.probabilities!r}")
        if self.unit_px < UNIT_ALIGN or self.unit_px % UNIT_ALIGN:
            raise ConfigError(f"--unit-px must be a positive multiple of {UNIT_ALIGN}, got {self.unit_px}")


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


def item_path(out: Path) -> Path:
    """The STAC Item describing the map ``out``."""
    return out.with_suffix(".json")


def check_output(out: Path, overwrite: bool, probabilities: bool) -> Path:
    """The resolved output path; refuses what is not a GeoTIFF name, would replace a file silently
    or cannot be written (nothing is created: the engine makes the folder when it starts)."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"--out {out}: the map is a GeoTIFF, give a .tif path")
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a directory; give a file path such as {out / 'map.tif'}")
    targets = [out, probabilities_path(out)] if probabilities else [out]
    targets.append(item_path(out))
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


def zone_folders(spec: Path) -> dict[str, Path]:
    """``--zones``: a folder whose sub-folders are zones, or a text file with one zone folder per
    line (relative to the file; ``#`` starts a comment). Zone names (folder names) name the outputs,
    so they must be unique."""
    spec = Path(spec).expanduser()
    if spec.is_dir():
        folders = sorted(p for p in spec.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ConfigError(f"--zones {spec}: no zone folder in it (one sub-folder per zone)")
    elif spec.is_file():
        lines = [line.split("#", 1)[0].strip() for line in spec.read_text(encoding="utf-8").splitlines()]
        folders = [(spec.parent / line).resolve() for line in lines if line]
        if not folders:
            raise ConfigError(f"--zones {spec}: lists no zone folder (one per line)")
        for folder in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"--zones {spec}: {folder} is not a directory")
    else:
        raise FileNotFoundError(f"--zones {spec}: no such file or directory")
    zones: dict[str, Path] = {}
    for folder in folders:
        if folder.name in zones:
            raise ConfigError(
                f"--zones {spec}: two zones are named {folder.name} ({zones[folder.name]} and {folder}); "
                "zone names name the outputs, rename one folder"
            )
        zones[folder.name] = folder.resolve()
    return zones


def check_outdir(out: Path) -> Path:
    """``--out`` of ``--zones``: a folder (created when missing) that can be written."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; with --zones, --out is a folder")
    if out.suffix.lower() in (".tif", ".tiff"):
        raise ConfigError(f"--out {out}: with --zones, --out is a folder (one map per zone), not a .tif")
    folder = out.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {folder} is not a writable folder")
    return out.resolve()
