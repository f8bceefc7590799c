"""The fine-tuning run itself: resolve the encoder, check the shards, fit, test the best checkpoint.

:mod:`finetune.cli` parses the command line and checks the config before importing this module
(torch, Lightning, the models).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L

from finetune.baseline import imagenet_state
from finetune.config import EXAMPLE_PRETRAIN_RUN, FinetuneConfig
from finetune.custom_data import with_custom_shards
from finetune.module import FinetuneTask
from finetune.outputs import TestOutputs
from finetune.runs import run_dir
from maestro.datasets import DEFAULT_DATASET, Dataset, configured_dataset, dataset_of_manifest, get_dataset
from maestro.errors import ConfigError, DataError
from maestro.evaluation import SegmentationScores
from maestro.hub.weights import Pick, Weights
from maestro.modalities import MODALITIES, ModalityOverride, with_companions
from maestro.models import zoo
from maestro.models.config import EncoderConfig
from maestro.models.encoder import restrict
from maestro.models.finetuning import network_config
from maestro.models.registry import model_type_of_config
from maestro.tasks import CheckedLabels
from maestro.training.checkpoints import trained_checkpoint
from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import build_trainer, fit_for_best, run_test
from shards.manifest import read_manifest
from shards.reading import local_manifest, resolve_source

log = logging.getLogger("finetune")


def encoder_weights(init: str, pick: Pick) -> Weights:
    """The pretrained encoder ``model.init`` names (any source of :mod:`maestro.hub.sources`)."""
    try:
        return zoo.load_encoder_weights(init, pick, user="model.init")
    except FileNotFoundError as error:
        example = (
            "; run `make example` for the example's pretraining run" if init == EXAMPLE_PRETRAIN_RUN else ""
        )
        raise FileNotFoundError(f"no pretrained weights at {init} ({error}){example}") from None


def shards_dataset(config: FinetuneConfig) -> Dataset:
    """The dataset the training shards hold: your own, as ``dataset.config`` describes it, else
    the one their manifest's ``dataset_key`` names (FLAIR-HUB for manifests written before it, and
    for shards without a local manifest)."""
    if config.dataset.config is not None:
        return configured_dataset("custom", config.dataset.config)
    file = local_manifest(config.data.train) if config.data.train is not None else None
    if file is None or not file.is_file():
        return get_dataset(DEFAULT_DATASET)
    try:
        entry = read_manifest(file).split(config.data.train_split)
    except DataError:  # a broken manifest or a missing split: check_shards names it
        return get_dataset(DEFAULT_DATASET)
    return dataset_of_manifest(entry.dataset_key)


def with_dataset_sizes(encoder: EncoderConfig, dataset: Dataset) -> EncoderConfig:
    """``encoder`` with the dataset row's per-modality overrides (FLAIR #2: S2 at 40 px) under its
    own: a value the encoder config sets wins."""
    keys = [key for key in encoder.modalities if key in dataset.overrides]
    if not keys:
        return encoder
    overrides = dict(encoder.overrides)
    for key in keys:
        overrides[key] = dataset.overrides[key].under(overrides.get(key, ModalityOverride()))
    return encoder.replace(overrides=overrides)


def resolve(config: FinetuneConfig, load_weights: bool = True) -> tuple[FinetuneConfig, dict | None]:
    """Fill ``model.encoder`` from ``model.init`` (restricted to ``model.modalities``) and return the
    pretrained encoder weights a fresh run starts from (None with ``init: random``). A baseline reads
    only inputs from ``model.encoder`` (default: the shards' dataset's default inputs that it can
    read, for ``model.modalities``) and starts from ImageNet weights (``model.pretrained``). A random
    or baseline encoder takes the sizes of the shards' dataset (:func:`with_dataset_sizes`)."""
    model = config.model
    if model.init == "random" or model.is_baseline:
        dataset = shards_dataset(config)
        encoder = model.encoder or model.default_encoder(dataset.default_inputs)
        encoder = with_dataset_sizes(encoder, dataset)
        if model.modalities is not None:
            encoder = encoder.replace(
                modalities=model.modalities,
                overrides={k: v for k, v in encoder.overrides.items() if k in model.modalities},
            )
        state = None
    elif not load_weights and model.encoder is not None:
        # A run's own config (resumed or tested): its encoder is resolved, its checkpoint holds the
        # weights, and the init source need not exist any more.
        encoder, state = model.encoder, None
    else:
        weights = encoder_weights(model.init, model.weights)
        if model.modalities is not None:
            weights = restrict(weights, model.modalities)
        if model.encoder is not None and model.encoder != weights.config:
            raise ConfigError(
                f"model.encoder {model.encoder.to_dict()} does not match the encoder of {model.init} "
                f"({weights.config.to_dict()}); drop model.encoder to take it from the init weights"
            )
        log.info("starting from %s", weights.note)
        encoder, state = weights.config, weights.state if load_weights else None
    resolved = dataclasses.replace(config, model=dataclasses.replace(model, encoder=encoder))
    if model.is_baseline and load_weights:
        state = imagenet_state(resolved)
    trainer = dataclasses.replace(resolved.trainer, output_dir=run_dir(config))
    return dataclasses.replace(resolved, trainer=trainer), state


def check_shards(config: FinetuneConfig, inputs: Sequence[str]) -> None:
    """Refuse, before training, shards that lack the task's labels or the model's inputs."""
    label = config.task.target.label_modality
    data = config.data
    for name, urls, split in (
        ("train", data.train, data.train_split),
        ("val", data.val, data.val_split),
        ("test", data.test, data.test_split),
    ):
        if urls is None:
            continue
        source = resolve_source(urls, split)
        if source.modalities is None:  # remote shards without a manifest: checked per sample
            continue
        absent = [key for key in (*inputs, label) if key not in source.modalities]
        if absent:
            raise ConfigError(
                f"data.{name} ({urls}, split {split}) has no {absent}: its shards hold {source.modalities}. "
                f"The {config.task.name} task needs label {label!r} and the model reads {list(inputs)}"
            )
    check_encoder_fits_shards(config, inputs)


def check_encoder_fits_shards(config: FinetuneConfig, inputs: Sequence[str]) -> None:
    """Refuse, before anything is written, an encoder built for inputs the shards cannot give.

    Shards hold every modality at its dataset's image size (the registry's, unless the dataset
    row overrides it: FLAIR #2's S2 super-patch) with all its bands (the reader and the writer
    check both), and preprocessing selects bands and dates but never resizes, so an encoder built
    for other sizes (e.g. a reference checkpoint converted for 128 px aerial) would only fail
    inside its first training step."""
    model = config.model
    dataset = shards_dataset(config)
    source = (
        "model.encoder" if model.init == "random" or model.is_baseline else f"the encoder of {model.init}"
    )
    problems, sizes, bad = [], [], []
    for key in inputs:
        spec, stored, size = model.encoder.specs[key], MODALITIES[key], dataset.image_size(key)
        before = len(problems)
        if spec.image_size != size:
            problems.append(f"{key} images of {spec.image_size} px where the shards hold {size} px")
            sizes.append(f"{key}={size}")
        unknown = [band for band in spec.bands if band not in stored.bands]
        if unknown:
            problems.append(f"{key} bands {unknown} where the shards hold {list(stored.bands)}")
        if not stored.temporal and spec.num_dates != 1:
            problems.append(f"{spec.num_dates} dates of {key} where the shards hold one")
        if len(problems) > before:
            bad.append(key)
    if not problems:
        return
    fixes = []
    if sizes and source == "model.encoder":
        fixes.append(
            " ".join(f"model.encoder.overrides.{size.replace('=', '.image_size=')}" for size in sizes)
        )
    elif sizes:
        fixes.append(
            f"an encoder built for {', '.join(sizes)} px (a converted reference checkpoint: "
            f"maestro import-reference SOURCE --image-size {' '.join(sizes)})"
        )
    kept = [key for key in inputs if key not in bad]
    if kept:
        fixes.append(f"leave {bad} out with --modalities {','.join(kept)}")
    raise ConfigError(
        f"{source} takes {'; '.join(problems)} (data.train: {config.data.train}). "
        + ("Fix: " + ", or ".join(fixes) if fixes else "Use an encoder built for these shards")
    )


def datamodule(config: FinetuneConfig, inputs: Sequence[str]) -> ShardDataModule:
    """Shards -> batches with the model's inputs, their masks and the task's labels (checked in
    workers), preprocessed as the network's type asks (the baseline adds its cloudy-date filter)."""
    specs = {key: spec for key, spec in config.model.encoder.specs.items() if key in inputs}
    target = config.task.target
    return ShardDataModule(
        config.data,
        preprocess_for(specs, **preprocess_options(config)),
        members=[*with_companions(list(specs)), target.label_modality],
        seed=config.trainer.seed,
        wrap=functools.partial(CheckedLabels, target=target),
    )


def preprocess_options(config: FinetuneConfig) -> dict:
    """What the run's network adds to the shared preprocessing (its registry row says)."""
    network = network_config(config.model, config.task)
    return model_type_of_config(network).preprocess_options(network)


def test(
    config: FinetuneConfig, task: FinetuneTask, trainer: L.Trainer, ckpt_path: Path | None
) -> SegmentationScores:
    """Test ``ckpt_path`` (or the task's current weights) on ``data.test`` and write the outputs."""
    if config.data.test is None:
        raise ConfigError("data.test is not set: there is no test split to evaluate")
    inputs = [key for key in config.inputs if key not in config.eval.missing_modalities]
    if config.eval.missing_modalities:
        log.info(
            "testing without %s (they count as having no valid date)", list(config.eval.missing_modalities)
        )
    task.test_writer = TestOutputs(
        Path(config.trainer.output_dir) / "test",
        config.task.target,
        {key: spec.bands for key, spec in config.model.encoder.specs.items()},
        num_figures=config.eval.num_figures,
        save_predictions=config.eval.save_predictions,
    )
    run_test(trainer, task, datamodule(config, inputs), ckpt_path)
    return task.test_scores


def run(
    config: FinetuneConfig,
    resume: str | None = None,
    eval_only: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> SegmentationScores:
    """Fit (or, with ``eval_only``, reuse a trained run), then test its best checkpoint."""
    config, state = resolve(config, load_weights=resume is None and not eval_only)
    config = with_custom_shards(config)
    out = Path(config.trainer.output_dir)
    check_shards(config, config.inputs)
    if eval_only:
        return test(config, FinetuneTask(config), build_trainer(config, callbacks), trained_checkpoint(out))
    trainer, ckpt = fit_for_best(
        config,
        functools.partial(FinetuneTask, encoder_state=state),
        datamodule(config, config.inputs),
        "val/miou",
        "max",
        callbacks,
        resume,
    )
    return test(config, trainer.lightning_module, trainer, ckpt)
