"""Where a pretrained encoder comes from: a training checkpoint, a run, a model folder or the Hub.

:func:`load_encoder_weights` accepts every form a user has at hand and returns the encoder's config
and its weights (keys in the encoder's own layout, :mod:`maestro.models.encoder`):

- ``path/to/run`` (a ``pretrain`` or ``finetune`` run directory: its newest checkpoint),
- ``path/to/step0001000.ckpt`` (a Lightning checkpoint, read with ``weights_only=True``),
- ``path/to/folder`` holding ``config.json`` + ``model.safetensors`` (any model type),
- ``hf:org/name`` or ``hf:org/name@revision`` (downloaded into the normal Hugging Face cache); a
  repo that holds a checkpoint of IGN's reference MAESTRO code instead of ``model.safetensors``
  (``hf:IGNF/MAESTRO_FLAIR-HUB_base``) is converted once, without running any of its code, and
  the converted folder is cached (:func:`maestro.reference.convert.converted_hub_checkpoint`).

From training checkpoints the EMA weights are taken when present (``weights="model"`` for the live
ones); the returned :attr:`EncoderWeights.note` says which.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from maestro.errors import ConfigError
from maestro.hub.folder import PICKLE_SUFFIXES
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.legacy import upgrade_pretrain_checkpoint
from maestro.training.checkpoints import read_checkpoint
from maestro.training.trainer import latest_checkpoint

log = logging.getLogger(__name__)

Weights = Literal["ema", "model"]
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class EncoderWeights:
    config: EncoderConfig
    state: dict[str, torch.Tensor]
    source: str
    note: str
    """Which weights were taken, in words (for logs and model cards)."""


def _sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _encoder_config(model: Mapping[str, Any], where: str) -> EncoderConfig:
    """The encoder section of a stored model config (MAE or fine-tuning)."""
    try:
        if "init" in model:  # a fine-tuning run: its resolved encoder
            if model.get("encoder") is None:
                raise ConfigError("the run's model.encoder is empty")
            return EncoderConfig.from_dict(model["encoder"])
        return MAEConfig.from_dict(model).encoder
    except ConfigError as error:
        raise ConfigError(f"{where}: the stored model config does not load ({error})") from None


def from_checkpoint(path: Path, weights: Weights = "ema") -> EncoderWeights:
    """Encoder config and weights of a ``pretrain`` or ``finetune`` Lightning checkpoint."""
    checkpoint = read_checkpoint(path)
    upgrade_pretrain_checkpoint(checkpoint)
    model = checkpoint.get("hyper_parameters", {}).get("config", {}).get("model")
    if not isinstance(model, Mapping):
        raise ConfigError(f"{path} is not a MAESTRO suite checkpoint (no stored model config)")
    config = _encoder_config(model, str(path))
    ema = checkpoint.get("ema_state_dict")
    if weights == "ema" and ema:
        state, note = (
            _sub_state(ema, "module.encoder."),
            f"EMA weights of {path.name} (step {checkpoint.get('global_step')})",
        )
    else:
        if weights == "ema":
            log.info("%s holds no EMA weights; using the trained weights", path)
        state = _sub_state(checkpoint.get("state_dict", {}), "model.encoder.")
        note = f"trained (non-EMA) weights of {path.name} (step {checkpoint.get('global_step')})"
    if not state:
        raise ConfigError(f"{path} holds no encoder weights (no 'encoder.' tensors)")
    return EncoderWeights(config, state, str(path), note)


def from_folder(path: Path) -> EncoderWeights:
    """Encoder of a model folder (``config.json`` + ``model.safetensors``) of any model type."""
    from maestro.hub.folder import read_model_folder

    folder = read_model_folder(path)
    if folder.model_type == "maestro-encoder":
        config, state = folder.config, folder.state
        encoder = EncoderConfig.from_dict(config)
    else:
        encoder_config = folder.config.get("encoder")
        if not isinstance(encoder_config, Mapping):
            raise ConfigError(f"{path}/config.json: no encoder section in the {folder.model_type} config")
        encoder = EncoderConfig.from_dict(encoder_config)
        state = _sub_state(folder.state, "encoder.")
    return EncoderWeights(encoder, dict(state), str(path), f"{folder.model_type} weights of {path}")


def load_encoder_weights(source: str | Path, weights: Weights = "ema") -> EncoderWeights:
    """Config and weights of a pretrained encoder from any supported source (module docstring)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        from maestro.hub.remote import download

        spec = text[len(HUB_PREFIX) :]
        try:
            folder = download(spec)
        except ConfigError as error:  # no model.safetensors: maybe a reference checkpoint
            from maestro.reference.convert import converted_hub_checkpoint

            folder = converted_hub_checkpoint(spec, weights, reason=error)
        return from_folder(folder)
    path = Path(source)
    if path.is_file():
        return from_checkpoint(path, weights)
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "model.safetensors").is_file():
            return from_folder(path)
        newest = latest_checkpoint(path)
        if newest is not None:
            log.info("using the newest checkpoint of run %s: %s", path, newest.name)
            return from_checkpoint(newest, weights)
        if any(p.suffix in PICKLE_SUFFIXES and p.suffix != ".ckpt" for p in path.iterdir()):
            return from_folder(path)  # pickled weights only: refused with the reason (never unpickled)
        raise FileNotFoundError(
            f"{path} is neither a run directory with checkpoints/ nor a model folder with config.json"
        )
    raise FileNotFoundError(
        f"no pretrained weights at {path} (expected a run directory, a .ckpt file, a model folder or "
        "hf:org/name); run `make example` for the example's pretraining run"
    )


def restrict(weights: EncoderWeights, modalities: tuple[str, ...]) -> EncoderWeights:
    """The same encoder on a subset of its inputs: unused patch embeddings and streams dropped.

    An input the pretrained encoder never saw cannot be added here: it has no embedding.
    """
    config = weights.config
    unknown = [key for key in modalities if key not in config.modalities]
    if unknown:
        raise ConfigError(
            f"the pretrained encoder ({weights.source}) takes {list(config.modalities)}; it has no weights "
            f"for {unknown}. Fine-tune on a subset of its inputs or pretrain with them"
        )
    if tuple(modalities) == config.modalities:
        return weights
    from maestro.models.encoder import MaestroEncoder

    subset = config.replace(
        modalities=tuple(modalities),
        overrides={key: value for key, value in config.overrides.items() if key in modalities},
    )
    with torch.device("meta"):
        keys = set(MaestroEncoder(subset, initialise=False).state_dict())
    state = {key: value for key, value in weights.state.items() if key in keys}
    return EncoderWeights(subset, state, weights.source, weights.note + f", restricted to {list(modalities)}")
