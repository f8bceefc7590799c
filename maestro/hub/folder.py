"""The on-disk layout of a published model: ``config.json`` + ``model.safetensors`` (+ ``README.md``).

This is the Hugging Face Hub layout: a local folder, a Hub repo and a Hub cache snapshot hold the
same three files. ``config.json`` says what the weights are and everything needed to rebuild the
network without the suite's training configs::

    {"model_type": "maestro-encoder",   # a row of maestro.models.registry.MODEL_TYPES
     "config": {...},                   # that type's config (EncoderConfig, ...) as plain data
     "task": {"name": "lc", "level": 1, "class_names": [...]},   # segmenters only
     "suite_version": "0.1.0"}

Weights are only ever read from safetensors (no pickle, no code from the folder). Loading is
strict: a missing or unexpected tensor is an error that lists them. A folder is written
byte-for-byte the same for the same weights and config (:func:`write_model_folder`), so a
re-published model shows no change on the Hub.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from maestro.errors import ConfigError
from maestro.hub.sources import CARD_NAME, CONFIG_NAME, PICKLE_SUFFIXES, WEIGHTS_NAME
from maestro.models.registry import MODEL_TYPES, get_model_type

log = logging.getLogger(__name__)

__all__ = [  # the file names are :mod:`maestro.hub.sources`'s (read without torch), re-exported
    "CARD_NAME",
    "CONFIG_NAME",
    "PICKLE_SUFFIXES",
    "WEIGHTS_NAME",
    "ModelFolder",
    "load_strict",
    "mismatches",
    "read_model_folder",
    "sort_metadata",
    "suite_version",
    "write_model_folder",
]


def _umask_mode() -> int:
    """The mode a plain ``open`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def suite_version() -> str:
    try:
        return metadata.version("maestro-eo")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder holds, read but not yet turned into a network."""

    path: Path
    model_type: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    task: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_model_folder(
    folder: str | Path,
    model_type: str,
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    task: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created; files replaced)."""
    get_model_type(model_type)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "model_type": model_type,
        "config": dict(config),
        "suite_version": suite_version(),
    }
    if task is not None:
        document["task"] = dict(task)
    if extra:
        document.update(extra)
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    weights = folder / WEIGHTS_NAME
    save_file(tensors, str(weights), metadata={"format": "pt", "model_type": model_type})
    sort_metadata(weights)
    weights.chmod(_umask_mode())  # safetensors creates it 0600; every other file follows the umask
    (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")
    return folder


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, in place.

    safetensors writes the metadata in a random order (a Rust hash map), so the same weights gave
    files that differ from one save to the next. The header is JSON padded with spaces to a fixed
    length: the sorted one has the same length, and the tensors do not move."""
    with path.open("r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length), object_pairs_hook=dict)
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # pragma: no cover - JSON of the same content never grows
            raise ValueError(f"{path}: the sorted safetensors header would not fit")
        handle.seek(8)
        handle.write(text.ljust(length))


def read_model_folder(folder: str | Path) -> ModelFolder:
    """Read a model folder; a folder with only pickled weights is refused (never unpickled)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {folder}")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ConfigError(
                f"{folder} holds only pickled weights {pickles}: they are never loaded (unpickling runs "
                f"arbitrary code). Convert them to {WEIGHTS_NAME} first: a training checkpoint of this suite "
                "with `maestro publish CKPT --dry-run --out FOLDER`, a checkpoint of IGN's reference MAESTRO "
                "code with `maestro import-reference CKPT --out FOLDER`"
            )
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}")
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_NAME}: the weights alone do not say which model they are"
        )
    try:
        document = json.loads(config_file.read_text())
    except ValueError as error:
        raise ConfigError(f"{config_file} is not valid JSON ({error})") from None
    model_type = document.get("model_type")
    if model_type not in MODEL_TYPES or not isinstance(document.get("config"), dict):
        raise ConfigError(
            f"{config_file}: not a MAESTRO suite model (model_type {model_type!r}; expected one of "
            f"{tuple(MODEL_TYPES)} and a 'config' mapping)"
        )
    extra = {k: v for k, v in document.items() if k not in ("model_type", "config", "task")}
    with safe_open(str(weights), framework="pt", device="cpu") as handle:
        stored_type = (handle.metadata() or {}).get("model_type")
        if stored_type is not None and stored_type != model_type:
            raise ConfigError(
                f"{folder}: {CONFIG_NAME} says {model_type} but {WEIGHTS_NAME} holds {stored_type} weights; "
                "the two files come from different models. Export the folder again in one go "
                "(`save_pretrained` or `maestro publish`)"
            )
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    return ModelFolder(folder, model_type, document["config"], state, document.get("task"), extra)


def mismatches(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and mis-shaped tensors of ``state`` against ``expected`` key -> shape,
    each kind summarised in one line (empty: the weights fit)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{key}: {tuple(state[key].shape)} vs model {tuple(expected[key])}"
        for key in set(expected) & set(state)
        if tuple(state[key].shape) != tuple(expected[key])
    )
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {missing[:20]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {unexpected[:20]}")
    if shapes:
        parts.append(f"wrong shape {len(shapes)}: {shapes[:20]}")
    return parts


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str, hint: str = "") -> None:
    """``load_state_dict(strict=True)`` with an error that lists every missing, unexpected and
    mis-shaped tensor, naming where the weights came from (``hint``: what to do about it)."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    parts = mismatches(expected, state)
    if parts:
        raise ConfigError(
            f"weights from {where} do not fit the model its config describes; " + "; ".join(parts) + hint
        )
    module.load_state_dict(state, strict=True)
