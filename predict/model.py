"""The network to map with and everything it dictates: inputs, footprint, classes, colours.

Three sources, all read without unpickling anything:

* a fine-tuning run directory: ``config.yaml`` (the resolved :class:`~finetune.config.FinetuneConfig`)
  and ``best.ckpt`` (``ema_state_dict`` with ``module.*`` keys, ``state_dict`` with ``model.*``),
  read with ``torch.load(weights_only=True)``; EMA weights unless ``weights="model"``;
* a model folder (``config.json`` with ``model_type: maestro-segmenter`` + ``model.safetensors``);
* ``hf:org/name[@revision]``: that folder from the Hugging Face Hub (or its local cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from maestro.data.preprocess import PreprocessConfig
from maestro.errors import ConfigError
from maestro.hub.folder import load_strict, read_model_folder
from maestro.labels import RGB, palette
from maestro.modalities import MODALITIES, with_companions
from maestro.models.config import ModalitySpec
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.tasks import LabelTarget, get_task
from predict.options import FOLDER_CONFIG, HUB_PREFIX, RUN_CONFIG, find_model, run_checkpoint

log = logging.getLogger(__name__)

Weights = Literal["ema", "model"]
SEGMENTER = "maestro-segmenter"


@dataclass(frozen=True)
class TaskInfo:
    """What the output channels mean: the task's nomenclature level and its class names."""

    target: LabelTarget
    class_names: tuple[str, ...]
    """One name per output channel (channel k predicts class value k)."""
    ignored: tuple[int, ...]
    """Channels never trained (ignored values of the nomenclature): never predicted."""

    @property
    def palette(self) -> tuple[RGB, ...]:
        return palette(self.target.nomenclature)


@dataclass(frozen=True)
class PredictModel:
    """A segmenter ready for inference, with the facts of its config the mapping needs."""

    network: nn.Module
    config: SegmenterConfig
    task: TaskInfo
    source: str
    """Where the weights came from, in words (logged and written into the map's metadata)."""

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return dict(self.config.encoder.specs)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def tile_size(self) -> int:
        """Output pixels per tile side: the label size."""
        return self.config.label_size

    @property
    def label_pixel_m(self) -> float:
        """Ground size of an output pixel: the label raster's pixel in the registry."""
        return MODALITIES[self.task.target.label_modality].pixel_size_m

    @property
    def footprint_m(self) -> float:
        """Ground side of one model input (102.4 m at default sizes)."""
        return self.tile_size * self.label_pixel_m

    def input_pixel_m(self, key: str) -> float:
        """Ground size of the pixels the model reads for ``key`` (the registry's at default sizes)."""
        return self.footprint_m / self.specs[key].image_size

    def preprocess(self, cloud_avoidance: bool = True) -> PreprocessConfig:
        """The training preprocessing for this model's inputs (bands and dates from its config)."""
        from maestro.training.data import preprocess_for

        return preprocess_for(self.specs, cloud_avoidance=cloud_avoidance)

    def rasters(self, cloud_avoidance: bool = True) -> list[str]:
        """Zone rasters needed: every input, plus their cloud masks when cloud avoidance is on."""
        inputs = list(self.specs)
        return with_companions(inputs) if cloud_avoidance else inputs


def task_info(
    name: str, level: int, num_classes: int, class_names: Any = None, ignored: Any = None, where: str = ""
) -> TaskInfo:
    """Task facts from a name and level, checked against the network's output channels."""
    target = get_task(name).target(level)
    if target.num_classes != num_classes:
        raise ConfigError(
            f"{where}: the network has {num_classes} output channels but {name} level {level} has "
            f"{target.num_classes} classes"
        )
    names = tuple(class_names) if class_names is not None else target.names[:num_classes]
    if len(names) != num_classes:
        raise ConfigError(f"{where}: {len(names)} class names for {num_classes} output channels")
    if ignored is None:
        ignored = [v for v in target.nomenclature.ignored if v < num_classes]
    return TaskInfo(target, names, tuple(sorted(int(v) for v in ignored)))


def _build(config: SegmenterConfig, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    network = MaestroSegmenter(config)
    load_strict(network, state, where)
    return network.eval()


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def load_run(run: Path, weights: Weights = "ema") -> PredictModel:
    """A fine-tuning run directory: its resolved config.yaml and best.ckpt."""
    from finetune.config import FinetuneConfig
    from finetune.module import segmenter_config
    from maestro.config import load_config

    ckpt = run_checkpoint(run)
    config = load_config(FinetuneConfig, run / RUN_CONFIG)
    if config.model.encoder is None:
        raise ConfigError(
            f"{run / RUN_CONFIG}: model.encoder is not resolved; is this the run's own config.yaml?"
        )
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise ConfigError(f"{ckpt} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    ema = checkpoint.get("ema_state_dict") if isinstance(checkpoint, dict) else None
    if weights == "ema" and ema:
        state, which = _sub_state(ema, "module."), "EMA weights"
    else:
        if weights == "ema":
            log.info("%s holds no EMA weights; using the trained weights", ckpt)
        state, which = _sub_state(checkpoint.get("state_dict", {}), "model."), "trained weights"
    segmenter = segmenter_config(config)
    source = f"{which} of {ckpt} (step {checkpoint.get('global_step')})"
    task = task_info(config.task.name, config.task.level, segmenter.num_classes, where=str(run / RUN_CONFIG))
    return PredictModel(_build(segmenter, state, source), segmenter, task, source)


def load_folder(folder: Path, source: str | None = None) -> PredictModel:
    """A model folder (config.json + model.safetensors) holding a segmenter with its task."""
    read = read_model_folder(folder)
    where = str(folder / FOLDER_CONFIG)
    if read.model_type != SEGMENTER:
        raise ConfigError(
            f"{where}: a {read.model_type} cannot map a zone; give a {SEGMENTER} (a fine-tuned model)"
        )
    config = SegmenterConfig.from_dict(read.config)
    task = read.task or {}
    if "name" not in task or "level" not in task:
        raise ConfigError(f"{where}: no task name and level, so the classes of the map are unknown")
    info = task_info(
        task["name"], task["level"], config.num_classes, task.get("class_names"), task.get("ignored"), where
    )
    source = source or str(folder)
    return PredictModel(_build(config, read.state, source), config, info, source)


def load_model(spec: str, weights: Weights = "ema", device: str | torch.device = "cpu") -> PredictModel:
    """``RUN`` directory, model ``FOLDER`` or ``hf:org/name[@revision]`` -> a model on ``device``."""
    kind, path = find_model(spec)
    if kind == "hub":
        from maestro.hub.remote import download

        model = load_folder(download(spec[len(HUB_PREFIX) :]), source=spec)
    elif kind == "folder":
        model = load_folder(path)
    else:
        model = load_run(path, weights)
    model.network.to(device)
    log.info(
        "model: %s (%s level %d, %d classes, tiles of %.1f m)",
        model.source,
        model.task.target.task,
        model.task.target.level,
        model.num_classes,
        model.footprint_m,
    )
    return model
