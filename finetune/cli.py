"""``finetune``: train a segmentation head on the pretrained MAESTRO encoder, then test the best checkpoint.

    finetune --task lpis --level 2                       # on the built-in example's outputs
    finetune --task lc --init runs/pretrain --config configs/finetune/flairhub.yaml
    finetune --task lc --probe                           # linear probe: one linear layer on frozen encoder tokens
    finetune --task lc --eval-only --save-predictions    # test runs/finetune/lc-level1 again (its config.yaml)
    finetune --model swin-utae --task lpis --level 1 --modalities spot,s2,s1_asc,s1_des  # supervised baseline

Fits on the training shards, keeps the checkpoint with the best validation mIoU (EMA weights),
and tests it: metrics.json, per_class.md, confusion.png and samples.png in ``{run}/test/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from finetune.baseline import imagenet_state, is_baseline, preprocess_options
from finetune.config import ARCHITECTURES, FinetuneConfig, FinetuneTrainerConfig, ModelConfig
from finetune.module import FinetuneTask
from finetune.outputs import TestOutputs
from maestro.config import load_config, to_dict
from maestro.errors import ConfigError
from maestro.evaluation import SegmentationScores
from maestro.hub.sources import load_encoder_weights, restrict
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, with_companions
from maestro.modalities import resolve as resolve_modalities
from maestro.models.config import EncoderConfig
from maestro.tasks import TASKS
from maestro.training.cli import overrides_from, run_cli, stage_parser
from maestro.training.data import ShardDataModule, preprocess_for
from maestro.training.trainer import build_trainer, latest_checkpoint, run_stage
from shards.reading import resolve_source

log = logging.getLogger("finetune")
BEST = "best.ckpt"
EVAL_OVERRIDES = (
    "data",
    "eval",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
)
"""Overrides an ``--eval-only`` run applies to the tested run's own config: where the test data
is, what the test writes and on which devices it runs."""


def resolve(config: FinetuneConfig, load_weights: bool = True) -> tuple[FinetuneConfig, dict | None]:
    """Fill ``model.encoder`` from ``model.init`` (restricted to ``model.modalities``) and return the
    pretrained encoder weights a fresh run starts from (None with ``init: random``). swin-utae reads
    only inputs from ``model.encoder`` (default: the registry's for ``model.modalities``) and starts
    from ImageNet Swins (``model.pretrained``)."""
    model = config.model
    try:
        resolve_modalities(model.modalities or ())
    except (KeyError, ValueError) as error:
        raise ConfigError(f"model.modalities: {error.args[0]}") from None
    if model.init == "random" or is_baseline(model):
        encoder = model.encoder or EncoderConfig(modalities=model.modalities or DEFAULT_INPUTS)
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
        weights = load_encoder_weights(model.init, model.weights)
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
    if is_baseline(model) and load_weights:
        state = imagenet_state(resolved)
    trainer = dataclasses.replace(resolved.trainer, output_dir=run_dir(config))
    return dataclasses.replace(resolved, trainer=trainer), state


def run_dir(config: FinetuneConfig) -> Path:
    """Where the run of ``config`` lives: ``trainer.output_dir``, or by default one folder per
    task, level and kind of model, so that runs of different kinds never refuse each other."""
    out = Path(config.trainer.output_dir)
    if out != FinetuneTrainerConfig.output_dir:
        return out
    model = config.model
    name = f"{config.task.name}-level{config.task.level}"
    if is_baseline(model):
        return out / f"{name}-swin-utae"
    name += "-probe" if model.probe else ""
    usual = "linear" if model.probe else ModelConfig.head  # --probe trains the linear head
    name += f"-{model.head}-head" if model.head != usual else ""
    return out / name


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

    Shards hold every modality at the registry's image size with all its bands (the reader and
    the writer check both), and preprocessing selects bands and dates but never resizes, so an
    encoder built for other sizes (e.g. a reference checkpoint converted for 128 px aerial) would
    only fail inside its first training step."""
    model = config.model
    source = (
        "model.encoder" if model.init == "random" or is_baseline(model) else f"the encoder of {model.init}"
    )
    problems, sizes, bad = [], [], []
    for key in inputs:
        spec, stored = model.encoder.specs[key], MODALITIES[key]
        before = len(problems)
        if spec.image_size != stored.size_px:
            problems.append(f"{key} images of {spec.image_size} px where the shards hold {stored.size_px} px")
            sizes.append(f"{key}={stored.size_px}")
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
    """Shards -> batches with the model's inputs, their masks and the task's labels (checked in workers)."""
    from maestro.tasks import CheckedLabels

    specs = {key: spec for key, spec in config.model.encoder.specs.items() if key in inputs}
    target = config.task.target
    return ShardDataModule(
        config.data,
        preprocess_for(specs, **preprocess_options(config.model)),
        members=[*with_companions(list(specs)), target.label_modality],
        seed=config.trainer.seed,
        wrap=functools.partial(CheckedLabels, target=target),
    )


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
    trainer.test(task, datamodule=datamodule(config, inputs), ckpt_path=ckpt_path, weights_only=True)
    return task.test_scores


def run(
    config: FinetuneConfig,
    resume: str | None = None,
    eval_only: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> SegmentationScores:
    """Fit (or, with ``eval_only``, reuse a trained run), then test its best checkpoint."""
    config, state = resolve(config, load_weights=resume is None and not eval_only)
    out = Path(config.trainer.output_dir)
    check_shards(config, config.inputs)
    if eval_only:
        ckpt = out / BEST if (out / BEST).is_file() else latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--eval-only: {out} holds no trained run (no {BEST}, no checkpoints/)")
        task = FinetuneTask(config)
        trainer = build_trainer(config, callbacks)
        return test(config, task, trainer, ckpt)
    best = ModelCheckpoint(
        dirpath=out,
        filename="best",
        monitor="val/miou",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    trainer = run_stage(
        config,
        functools.partial(FinetuneTask, encoder_state=state),
        datamodule(config, config.inputs),
        [best, *callbacks] if config.data.val is not None else list(callbacks),
        resume=resume,
    )
    ckpt = Path(best.best_model_path) if best.best_model_path else None
    log.info("testing %s", ckpt or "the final weights (no validation split to pick a best checkpoint)")
    return test(config, trainer.lightning_module, trainer, ckpt)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "finetune",
        __doc__,
        config_required=False,
        epilog="Overrides are dotted keys, e.g. trainer.max_epochs=20 data.batch_size=8 model.aux_heads=true",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--task", choices=sorted(TASKS), help="lc (land cover) or lpis (crop type)")
    parser.add_argument("--level", type=int, help="nomenclature level (lpis: 1, 2 or 3)")
    parser.add_argument("--modalities", help="comma-separated inputs, a subset of the encoder's")
    parser.add_argument("--init", help="PATH.ckpt, run dir, model folder, hf:org/name[@rev] or random")
    parser.add_argument("--head", help="uperfuse (default), maestro or linear")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="linear probe: freeze the encoder and train the linear head (with --head: that head instead)",
    )
    parser.add_argument(
        "--model", choices=ARCHITECTURES, help="maestro (default) or swin-utae (supervised baseline)"
    )
    parser.add_argument(
        "--no-pretrained", action="store_true", help="swin-utae: random Swins, no ImageNet weights"
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="test the best checkpoint of a trained run (--output-dir, else the default folder) with its "
        "own config.yaml; only data.*, eval.* and device settings apply",
    )
    parser.add_argument("--save-predictions", action="store_true", help="write prediction GeoTIFFs")
    return parser


def flag_overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    for flag, key in (
        ("task", "task.name"),
        ("level", "task.level"),
        ("init", "model.init"),
        ("head", "model.head"),
        ("model", "model.architecture"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.modalities:
        overrides.append(f"model.modalities=[{args.modalities}]")
    if args.probe:
        overrides.append("model.probe=true")
        if args.head is None:
            overrides.append("model.head=linear")
    if args.no_pretrained:
        overrides.append("model.pretrained=false")
    if args.save_predictions:
        overrides.append("eval.save_predictions=true")
    return overrides


def _sections(config: FinetuneConfig) -> dict[str, Any]:
    """``section.key`` -> value, the granularity at which a tested config is compared."""
    return {f"{name}.{key}": value for name, part in to_dict(config).items() for key, value in part.items()}


def _applies_to_a_test(override: str) -> bool:
    key = override.partition("=")[0].strip()
    return key in EVAL_OVERRIDES or key.split(".")[0] in EVAL_OVERRIDES


def trained_run_config(config: FinetuneConfig, overrides: Sequence[str]) -> FinetuneConfig:
    """What ``--eval-only`` tests: the ``config.yaml`` of the run ``config`` names (:func:`run_dir`)
    with only the user's :data:`EVAL_OVERRIDES`. A task or model the run was not trained with is
    refused (it names another run); other training keys are ignored, with a warning."""
    folder = run_dir(config)
    saved = folder / "config.yaml"
    if not saved.is_file():
        log.info("%s has no config.yaml: testing it with the configuration as given", folder)
        return config
    kept = [o for o in overrides if _applies_to_a_test(o)]
    placed = [f"trainer.output_dir={json.dumps(str(folder))}"]  # the run may have been moved or copied
    tested = load_config(FinetuneConfig, saved, [*kept, *placed])
    given = _sections(load_config(FinetuneConfig, saved, [*overrides, *placed]))
    own = _sections(tested)
    changed = [key for key in given if given[key] != own[key]]
    fixed = [key for key in changed if key.startswith(("task.", "model."))]
    if fixed:
        differences = ", ".join(f"{key}={given[key]} (the run's: {own[key]})" for key in fixed)
        raise ConfigError(
            f"--eval-only tests the run in {folder} as it was trained ({saved}), and it was not trained "
            f"with {differences}. Drop those, or name the run to test with --output-dir"
        )
    if changed:
        log.warning("--eval-only keeps the run's own %s (only data, eval and device settings apply)", changed)
    log.info("testing the run in %s with its own configuration (%s)", folder, saved)
    return tested


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parsed: list[argparse.Namespace] = []

    def stage_overrides(args: argparse.Namespace) -> list[str]:
        parsed.append(args)  # run_cli's own parse, for _run below
        return flag_overrides(args)

    def _run(config: FinetuneConfig, resume: str | None) -> SegmentationScores:
        args = parsed[-1]
        if args.eval_only:
            if resume is not None:
                raise ConfigError(
                    "--eval-only tests a trained run; it does not take --resume or --resume-from"
                )
            config = trained_run_config(config, [*overrides_from(args), *flag_overrides(args)])
        return run(config, resume=resume, eval_only=args.eval_only)

    return run_cli(parser, FinetuneConfig, _run, argv, extra_overrides=stage_overrides)


if __name__ == "__main__":
    sys.exit(main())
