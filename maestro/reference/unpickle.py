"""Reading a reference MAESTRO checkpoint without running anything it contains.

IGN publishes MAESTRO weights as Lightning checkpoints of its reference code: a pickled dict in
torch's zip format. Unpickling such a file normally imports and calls whatever the pickle names,
and it names classes of the reference package, whose top-level name (``maestro``) is ours too.
Here the file goes through ``torch.load(weights_only=True)``, torch's restricted unpickler, which
only rebuilds tensors, containers and plain values. Every other global the pickle names (found by
a static scan of the pickle, before loading) is bound to a fresh, inert stand-in class:

* the stand-in's constructor only records its arguments, and ``BUILD`` only stores the state,
  so a reference config dataclass (``maestro.conf.mask.MaskConfig``) comes back as a stand-in
  holding its fields, and a hostile ``__reduce__`` (``subprocess.call``, ``builtins.exec``...)
  comes back as a stand-in holding the command it would have run;
* nothing is imported (the reference package is never needed) and no code of the file runs.
  Globals from ``os``/``sys``/``posix``/``nt`` are refused by torch itself.

Globals outside the reference's packages are unexpected in a checkpoint of weights and are
reported (:attr:`ReferenceCheckpoint.neutralised`) so that callers can warn about them.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from maestro.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE_PACKAGES = ("maestro", "conf", "ssl_models")
"""Top-level packages of the reference code (``conf`` and ``ssl_models`` in its older layouts)."""


class StandIn:
    """An inert object standing for an instance (or a call result) of a global the pickle names."""

    reference_path = ""
    """``module.qualname`` of the global this class stands for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.reference_path}>"

    def fields(self) -> dict[str, Any]:
        """The recorded state as plain data (a dataclass's fields)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            state = {**(state[0] or {}), **(state[1] or {})}
        return dict(state) if isinstance(state, Mapping) else {}


def stand_in(path: str) -> type[StandIn]:
    """A new stand-in class for the global ``path``."""
    return type(f"StandIn[{path}]", (StandIn,), {"reference_path": path})


def is_reference_global(path: str) -> bool:
    return path.split(".", 1)[0] in REFERENCE_PACKAGES


def plain(value: Any) -> Any:
    """Hyper-parameters with stand-ins replaced by ``{"__class__": path, **fields}`` mappings."""
    if isinstance(value, StandIn):
        return {"__class__": value.reference_path, **{k: plain(v) for k, v in value.fields().items()}}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    return value


@dataclass
class ReferenceCheckpoint:
    """What a reference checkpoint holds that a conversion needs."""

    path: Path
    state: dict[str, torch.Tensor]
    """The Lightning ``state_dict`` (``model.*`` and ``ema_model.*``), or the bare state dict."""
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    """Plain data; reference config objects become ``{"__class__": ..., fields}``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """``epoch``, ``global_step``, ``pytorch-lightning_version`` when present."""
    neutralised: list[str] = field(default_factory=list)
    """Globals outside the reference packages that were replaced by stand-ins (unexpected)."""
    top_level: list[str] = field(default_factory=list)
    """Top-level keys of the checkpoint (the others are not read)."""


def read_reference_checkpoint(path: str | Path) -> ReferenceCheckpoint:
    """Load ``path`` with torch's restricted unpickler and stand-ins (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        names = sorted(get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, pickle.UnpicklingError) as error:
        raise ConfigError(
            f"{path} is not a torch zip checkpoint ({type(error).__name__}: {error}); reference MAESTRO "
            "checkpoints are Lightning .ckpt files written by torch.save"
        ) from None
    neutralised = [name for name in names if not is_reference_global(name)]
    if neutralised:
        log.warning(
            "%s names globals outside the reference code, replaced by inert stand-ins (never imported or "
            "called): %s",
            path,
            neutralised,
        )
    stand_ins = [(stand_in(name), name) for name in names]
    try:
        with safe_globals(stand_ins):
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{path} was refused by the restricted unpickler and nothing in it was run: {first}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(
            f"{path} could not be read as a checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path} holds a {type(loaded).__name__}, not a checkpoint dict")

    if isinstance(loaded.get("state_dict"), Mapping):
        raw_state, top_level = loaded["state_dict"], sorted(map(str, loaded))
    else:  # a bare state dict (torch.save(model.state_dict()))
        raw_state, top_level = loaded, []
    state: dict[str, torch.Tensor] = {}
    not_tensors = []
    for key, value in raw_state.items():
        if isinstance(value, torch.Tensor):
            state[str(key)] = value
        else:
            not_tensors.append(f"{key} ({type(value).__name__})")
    if not_tensors:
        raise ConfigError(f"{path}: state_dict entries that are not tensors: {not_tensors[:10]}")
    hyper = loaded.get("hyper_parameters") if top_level else None
    metadata = {
        k: plain(loaded[k]) for k in ("epoch", "global_step", "pytorch-lightning_version") if k in loaded
    }
    return ReferenceCheckpoint(
        path=path,
        state=state,
        hyper_parameters=plain(dict(hyper)) if isinstance(hyper, Mapping) else {},
        metadata=metadata,
        neutralised=neutralised,
        top_level=top_level,
    )
