"""``finetune``: train a segmentation head on the pretrained MAESTRO encoder, then test the best checkpoint.

    finetune --task lpis --level 2 --config configs/finetune/toy.yaml   # the example's scale (about a minute)
    finetune --task lc --init runs/pretrain data.train=/data/shards data.val=/data/shards data.test=/data/shards
    finetune --task lc --probe                           # linear probe: one linear layer on frozen encoder tokens
    finetune --eval-only --output-dir example/runs/finetune/lc --save-predictions   # test a run again
    finetune --model swin-utae --no-pretrained --task lpis --level 1 --modalities aerial,s2,s1_asc,s1_des
    finetune --data-config my_dataset/data.yaml --modalities aerial,dem   # your own dataset and classes
    finetune --model utt --task flair2 data.train=flair2_shards data.val=flair2_shards data.test=flair2_shards

Without --config the full recipe runs (50 epochs at batch 32: over an hour a run on 2 CPU cores).

Fits on the training shards, keeps the checkpoint with the best validation mIoU (EMA weights),
and tests it: metrics.json, per_class.md, confusion.png and samples.png in ``{run}/test/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from finetune.config import ARCHITECTURES, FinetuneConfig
from finetune.runs import trained_run_config
from maestro.data.custom.config import LABEL_KEY, load_custom_data
from maestro.datasets import DATASETS, get_dataset
from maestro.errors import ConfigError
from maestro.tasks import TASKS
from maestro.training.cli import overrides_from, run_cli, stage_parser

if TYPE_CHECKING:
    import lightning as L

    from maestro.evaluation import SegmentationScores


def run(
    config: FinetuneConfig,
    resume: str | None = None,
    eval_only: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> SegmentationScores:
    """Fit (or, with ``eval_only``, reuse a trained run), then test its best checkpoint."""
    # torch and Lightning load once the config has been checked, for a fast --help and refusal
    from finetune import stage

    return stage.run(config, resume=resume, eval_only=eval_only, callbacks=callbacks)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "finetune",
        __doc__,
        config_required=False,
        epilog="Overrides are dotted keys, e.g. trainer.max_epochs=20 data.batch_size=8 model.aux_heads=true",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="lc (land cover), lpis (crop type) on FLAIR-HUB shards, flair2 on FLAIR #2 shards",
    )
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
        "--model",
        choices=ARCHITECTURES,
        help="maestro (default); supervised baselines: swin-utae (FLAIR-HUB), unet or utt (FLAIR #2)",
    )
    parser.add_argument(
        "--no-pretrained",
        action="store_true",
        help="baselines: random weights, no ImageNet weights for the Swins or the U-Net encoder",
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="test the best checkpoint of a trained run (--output-dir, else the default folder) with its "
        "own config.yaml; only data.*, eval.* and device settings apply",
    )
    parser.add_argument("--save-predictions", action="store_true", help="write prediction GeoTIFFs")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="the dataset's default task when --task is not given (custom: with --data-config)",
    )
    parser.add_argument(
        "--data-config",
        metavar="YAML",
        help="your own dataset (README, 'Your own dataset'): its shards are built under the run folder, "
        "the task is custom with its nomenclature's classes",
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="--data-config: skip (and count) patches the reader rejects"
    )
    return parser


def dataset_overrides(args: argparse.Namespace) -> list[str]:
    """``--dataset`` / ``--data-config``: the task and, for your own dataset, its classes and shards."""
    if args.data_config is None:
        if args.dataset == "custom":
            raise ConfigError("--dataset custom reads your own dataset: give its --data-config YAML")
        if args.skip_bad:
            raise ConfigError("--skip-bad applies to a dataset read with --data-config")
        if args.dataset is not None and args.task is None:
            return [f"task.name={get_dataset(args.dataset).tasks[0]}"]
        return []
    if args.dataset not in (None, "custom"):
        raise ConfigError(f"--data-config describes your own dataset (--dataset custom), not {args.dataset}")
    if args.task not in (None, "custom"):
        raise ConfigError(f"--data-config trains the custom task on your classes, not --task {args.task}")
    data = load_custom_data(Path(args.data_config))
    nomenclature = yaml.safe_dump(
        data.nomenclature.classes_only().to_dict(), default_flow_style=True, width=10**6
    )
    overrides = [
        f"dataset.config={args.data_config}",
        "task.name=custom",
        f"task.nomenclature={nomenclature.strip()}",
        f"task.label_size={data.image_size(LABEL_KEY)}",
    ]
    return [*overrides, "dataset.skip_bad=true"] if args.skip_bad else overrides


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
    return [*dataset_overrides(args), *overrides]


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
