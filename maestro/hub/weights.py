"""Checkpoints and weight sources: how a training checkpoint is laid out, which checkpoint of a run
is meant, and which weights a source gives, with the reason in words.

``finetune --init``, ``predict --model``, ``maestro publish``, ``maestro.api.load_encoder`` and
``from_pretrained`` all load through :func:`load_weights`, so every one takes the same sources
(:mod:`maestro.hub.sources`) and picks the same weights from them.

A training checkpoint, as :class:`~maestro.training.task.TrainingTask` writes it through Lightning::

    hyper_parameters.config   the run's config as plain data (the stage's sections)
    state_dict                model.*   the trained network (the task's ``model`` attribute)
    ema_state_dict            module.*  its exponential moving average (timm's ModelEmaV3)
    global_step               optimizer steps taken

The network a checkpoint holds is the registry row whose ``from_run`` recognises the stored config
(:func:`maestro.models.registry.trained_network`). EMA weights are taken when the checkpoint has
them, unless ``pick="model"``. Checkpoints are read with ``weights_only=True``: nothing is unpickled.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from maestro.errors import ConfigError
from maestro.hub import remote
from maestro.hub.folder import read_model_folder
from maestro.hub.sources import BEST, CHECKPOINT_DIR, KINDS, Source, SourceKind, resolve_source
from maestro.models.legacy import is_flat_mae_config, upgrade_mae_config, upgrade_mae_state_dict
from maestro.models.registry import ModelType, get_model_type, trained_network

log = logging.getLogger(__name__)

HYPER_PARAMETERS, RUN_CONFIG_KEY = "hyper_parameters", "config"
STATE, NETWORK_PREFIX = "state_dict", "model."
EMA_STATE, EMA_PREFIX = "ema_state_dict", "module."
STEP = "global_step"
Pick = Literal["ema", "model"]
Converter = Callable[[str, Pick, ConfigError], Path]
"""(``org/name[@revision]``, pick, why the repo is no model folder) -> a converted model folder:
how a Hub repo of IGN's reference checkpoints becomes usable (:mod:`maestro.reference.convert`)."""
_STEP_NAME = re.compile(r"^step(\d+)\.ckpt$")


# ------------------------------------------------------------------------------ checkpoint files
def sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The entries of a checkpoint file, loaded with ``weights_only=True``; mmap reads only the
    pickled structure, not the tensors (GBs). A file that is not a checkpoint at all says so,
    rather than torch's remark that mmap needs the zip format."""
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{path} is not a readable checkpoint: it is not a torch.save zip archive, the format of "
            "every pretrain and finetune checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise ConfigError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None


def upgrade_pretrain_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Upgrade a ``pretrain`` checkpoint dict from before the encoder/MAE split, in place; True if
    it was one: the stored config's model section and the keys of the weights and of the EMA copy
    (the renames are :mod:`maestro.models.legacy`'s, the layout this module's)."""
    config = checkpoint.get(HYPER_PARAMETERS, {}).get(RUN_CONFIG_KEY, {})
    model = config.get("model")
    if not isinstance(model, Mapping) or not is_flat_mae_config(model):
        return False
    config["model"] = upgrade_mae_config(model)
    checkpoint[STATE] = upgrade_mae_state_dict(checkpoint.get(STATE, {}), NETWORK_PREFIX)
    if checkpoint.get(EMA_STATE) is not None:
        checkpoint[EMA_STATE] = upgrade_mae_state_dict(checkpoint[EMA_STATE], EMA_PREFIX)
    log.info("checkpoint predates the encoder/MAE split: keys and config mapped to the current layout")
    return True


def read_run_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of this suite (its run config stored), upgraded to the current key layout."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(
        checkpoint.get(HYPER_PARAMETERS, {}).get(RUN_CONFIG_KEY), dict
    ):
        raise ConfigError(
            f"{path} is not a checkpoint of this suite (no {HYPER_PARAMETERS}.{RUN_CONFIG_KEY})"
        )
    upgrade_pretrain_checkpoint(checkpoint)
    return checkpoint


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was written at: from its name, else from the file."""
    match = _STEP_NAME.match(path.name)
    if match:
        return int(match.group(1))
    return int(read_checkpoint(path).get(STEP, -1))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of a run with the highest optimizer step (``last.ckpt`` when it is a copy
    rather than a link; ``best.ckpt`` only if nothing newer exists)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    candidates = [p for p in folder.glob("*.ckpt") if not p.is_symlink()]
    if not candidates:
        return None
    # On a tie, a step-named file wins over last/best, which hold the same step.
    return max(candidates, key=lambda p: (checkpoint_step(p), _STEP_NAME.match(p.name) is not None, p.name))


def run_checkpoint(run: Path) -> Path:
    """The checkpoint a run's weights are taken from: the fine-tuning run's ``best.ckpt`` (best
    validation mIoU), else the run's newest checkpoint."""
    if (run / BEST).is_file():
        return run / BEST
    newest = latest_checkpoint(run)
    if newest is None:
        raise FileNotFoundError(
            f"{run} holds no {BEST} and no {CHECKPOINT_DIR}/*.ckpt: is it a pretrain or finetune run?"
        )
    return newest


def checkpoint_name(ckpt: Path, run: Path | None) -> str:
    """How notes and cards name a checkpoint: from its run's folder (``lc/best.ckpt``), else its file name."""
    if run is not None and ckpt.absolute().is_relative_to(run.absolute()):
        return f"{run.name}/{ckpt.absolute().relative_to(run.absolute())}"
    return ckpt.name


def pick_weights(checkpoint: Mapping[str, Any], pick: Pick, name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The trained network's state (keys as in the network) and which weights they are, in words."""
    step = checkpoint.get(STEP)
    ema = checkpoint.get(EMA_STATE)
    if pick == "ema" and ema:
        return sub_state(ema, EMA_PREFIX), f"EMA weights of {name} (step {step})"
    if pick == "ema":
        log.info("%s holds no EMA weights; using the trained weights", name)
    state = sub_state(checkpoint.get(STATE, {}), NETWORK_PREFIX)
    return state, f"trained (non-EMA) weights of {name} (step {step})"


# ------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Weights:
    """A network's config and weights, where they came from and which ones they are."""

    model_type: ModelType
    config: Any
    """A config of ``model_type.config_class``."""
    state: dict[str, torch.Tensor]
    """Keys as in the network's own ``state_dict``."""
    note: str
    """Which weights were taken, in words (logs, model cards, map metadata)."""
    source: str
    """The source as the user gave it."""
    task: dict[str, Any] | None = None
    """The ``task`` entry of a segmenter (:func:`maestro.models.finetuning.segmentation_task`)."""
    checkpoint: Path | None = None
    """The checkpoint read (runs and checkpoints)."""
    run: Path | None = None
    """The run directory it belongs to, when there is one."""
    run_config: dict[str, Any] | None = None
    """The run's stored config (runs and checkpoints)."""


def take(weights: Weights, want: ModelType | None) -> Weights:
    """``weights`` as the type asked for: the same type, or the encoder out of any type holding one."""
    row = weights.model_type
    if want is None or want is row:
        return weights
    if want.encoder_prefix == "" and row.encoder_prefix:
        state = sub_state(weights.state, row.encoder_prefix)
        if not state:
            raise ConfigError(
                f"{weights.source} holds no encoder weights (no {row.encoder_prefix!r} tensors)"
            )
        return replace(
            weights, model_type=want, config=row.encoder_config(weights.config), state=state, task=None
        )
    raise ConfigError(
        f"{weights.source} holds a {row.name}, not a {want.name}: load it as a {row.name} "
        "(maestro.models.from_pretrained takes any type)"
    )


def from_checkpoint(ckpt: Path, run: Path | None, pick: Pick = "ema", source: str | None = None) -> Weights:
    """The network a training checkpoint holds (module docstring), checked against its stored config."""
    checkpoint = read_run_checkpoint(ckpt)
    stored = checkpoint[HYPER_PARAMETERS][RUN_CONFIG_KEY]
    row, network = trained_network(stored, str(ckpt))
    state, note = pick_weights(checkpoint, pick, checkpoint_name(ckpt, run))
    return Weights(row, network.config, state, note, source or str(ckpt), network.task, ckpt, run, stored)


def from_folder(folder: Path, source: str | None = None) -> Weights:
    """The network of a model folder, its config checked against its type."""
    read = read_model_folder(folder)
    row = get_model_type(read.model_type)
    try:
        config = row.config_from_dict(read.config)
    except ConfigError as error:
        raise ConfigError(
            f"{folder}/config.json does not describe a valid {row.name} ({error}); it may come from a newer "
            f"suite version ({read.extra.get('suite_version', 'unknown')}): upgrade maestro-eo or pick an "
            "older revision"
        ) from None
    return Weights(
        row, config, dict(read.state), f"{row.name} weights of {folder}", source or str(folder), read.task
    )


def _from_hub(source: Source, pick: Pick, convert: Converter | None, **hub: Any) -> Weights:
    try:
        try:
            folder = remote.download(source.spec, **hub)
        except ConfigError as error:  # no model folder there: maybe a reference checkpoint
            if convert is None:
                raise
            folder = convert(source.spec, pick, error)
    except ConfigError as error:
        if source.explicit_hub:
            raise
        raise ConfigError(f"{source.text}: no such local path, and as a Hub id: {error}") from None
    return from_folder(folder, source.text)


def load_weights(
    source: str | Path,
    want: ModelType | None = None,
    pick: Pick = "ema",
    *,
    kinds: Collection[SourceKind] = KINDS,
    user: str = "this",
    convert: Converter | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Weights:
    """The weights ``source`` names (:mod:`maestro.hub.sources`), as type ``want`` (None: as stored).

    ``kinds`` and ``user`` say which forms the caller takes and how errors name it; ``convert``
    turns a Hub repo without ``model.safetensors`` into a folder (the reference converter); the
    Hub arguments are huggingface_hub's.
    """
    found = resolve_source(source, revision=revision, kinds=kinds, user=user)
    if found.kind == "hub":
        hub = {
            "revision": found.revision,
            "cache_dir": cache_dir,
            "token": token,
            "local_files_only": local_files_only,
        }
        weights = _from_hub(found, pick, convert, **hub)
    elif found.kind == "folder":
        weights = from_folder(found.path, found.text)
    else:
        run = found.run
        ckpt = run_checkpoint(found.path) if found.kind == "run" else found.path
        if found.kind == "run":
            log.info("using %s of run %s", ckpt.name, found.path)
        weights = from_checkpoint(ckpt, run, pick, found.text)
    return take(weights, want)
