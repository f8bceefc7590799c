"""What a weights source names, read from its text and the file system alone (no torch).

Every command and function that takes weights takes the same forms, told apart here::

    path/to/run               a pretrain or finetune run directory (its best.ckpt, else its newest checkpoint)
    path/to/step0001000.ckpt  a Lightning checkpoint of this suite
    path/to/folder            a model folder: config.json + model.safetensors (+ README.md)
    hf:org/name[@revision]    a Hub model (downloaded into, or read from, the Hugging Face cache)
    org/name[@revision]       the same, unless a local path of that name exists (it wins, as in
                              huggingface_hub)

Loading what a source names is :mod:`maestro.hub.weights`; this module only names it, so that the
CLIs refuse a mistyped path before torch loads. It also holds the file names of a run and of a
model folder that both read.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from maestro.errors import ConfigError

HUB_PREFIX = "hf:"
"""Marks a Hub model id where a local path could also be meant (``finetune --init hf:org/name``)."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
RUN_CONFIG = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST = "best.ckpt"
"""The checkpoint a fine-tuning run keeps for its best validation mIoU, in the run directory."""

SourceKind = Literal["run", "checkpoint", "folder", "hub"]
KINDS: tuple[SourceKind, ...] = ("run", "checkpoint", "folder", "hub")
KIND_NAMES: dict[SourceKind, str] = {
    "run": "run directory",
    "checkpoint": "training checkpoint",
    "folder": "model folder",
    "hub": "Hub model",
}
_BARE_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@\S+)?$")
_PUBLISH_HINT = (
    ". A training run or checkpoint becomes a model folder with `maestro publish RUN --dry-run --out FOLDER`"
)


def parse_repo(spec: str) -> tuple[str, str | None]:
    """``org/name`` or ``org/name@revision`` (branch, tag or commit) -> (repo id, revision)."""
    repo_id, _, revision = spec.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise ConfigError(f"{spec!r} is not a Hub model id: expected org/name or org/name@revision")
    return repo_id, revision or None


@dataclass(frozen=True)
class Source:
    """Where weights are, as :func:`resolve_source` read it."""

    kind: SourceKind
    text: str
    """What the user wrote."""
    path: Path | None = None
    """The local run, checkpoint or folder."""
    repo_id: str | None = None
    revision: str | None = None
    explicit_hub: bool = False
    """``hf:`` was written (else a bare ``org/name`` that names no local path)."""

    @property
    def spec(self) -> str:
        """``org/name[@revision]`` of a Hub model."""
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)

    @property
    def run(self) -> Path | None:
        """The run directory of a run or of a checkpoint inside one."""
        if self.kind == "run":
            return self.path
        if self.kind != "checkpoint" or self.path is None:
            return None
        parent = self.path.parent
        if parent.name == CHECKPOINT_DIR:
            return parent.parent
        return parent if (parent / RUN_CONFIG).is_file() else None


def _directory_kind(path: Path) -> SourceKind:
    if (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file():
        return "folder"
    if (path / CHECKPOINT_DIR).is_dir() or (path / BEST).is_file() or (path / RUN_CONFIG).is_file():
        return "run"
    if any(p.suffix in PICKLE_SUFFIXES and p.suffix != ".ckpt" for p in path.iterdir()):
        return "folder"  # pickled weights only: refused with the reason when read, never unpickled
    raise FileNotFoundError(
        f"{path} is neither a run directory (with {CHECKPOINT_DIR}/ or {BEST}) nor a model folder "
        f"(with {CONFIG_NAME} + {WEIGHTS_NAME})"
    )


def _names(kinds: Collection[SourceKind]) -> str:
    names = [KIND_NAMES[kind] for kind in KINDS if kind in kinds]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def resolve_source(
    source: str | Path,
    *,
    revision: str | None = None,
    kinds: Collection[SourceKind] = KINDS,
    user: str = "this",
) -> Source:
    """Which form ``source`` is (module docstring); ``kinds`` are the forms ``user`` (a command or
    function, named in errors) takes. Nothing is read but the names of files."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        repo_id, at = parse_repo(text[len(HUB_PREFIX) :])
        found = Source("hub", text, repo_id=repo_id, revision=at, explicit_hub=True)
    else:
        path = Path(text).expanduser()
        if revision is not None and path.exists():
            raise ConfigError(f"revision={revision!r} applies to Hub repos; {path} is a local path")
        if path.is_file():
            found = Source("checkpoint", text, path)
        elif path.is_dir():
            found = Source(_directory_kind(path), text, path)
        elif "hub" in kinds and _BARE_REPO.match(text):
            repo_id, at = parse_repo(text)
            found = Source("hub", text, path, repo_id=repo_id, revision=at)
        else:
            local = _names([kind for kind in kinds if kind != "hub"] or ["folder"])
            hub = f", and not a Hub id ({HUB_PREFIX}org/name[@revision])" if "hub" in kinds else ""
            raise FileNotFoundError(f"{text}: no such {local}{hub}")
    if found.kind not in kinds:
        hint = _PUBLISH_HINT if found.kind in ("run", "checkpoint") else ""
        raise ConfigError(f"{text} is a {KIND_NAMES[found.kind]}; {user} takes a {_names(kinds)}{hint}")
    if revision is not None:
        if found.revision is not None and found.revision != revision:
            raise ConfigError(
                f"{text!r} names revision {found.revision!r} but revision={revision!r} was also given: keep one"
            )
        found = Source("hub", text, found.path, found.repo_id, revision, found.explicit_hub)
    return found
