"""``maestro import-reference``: its flags and handler; the conversion is :mod:`maestro.reference.convert`.

Apart from the converter (which loads torch) so that ``maestro --help`` and a mistyped flag answer
at once; the handler imports the converter when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from maestro.errors import ConfigError
from maestro.hub.sources import WEIGHTS_NAME
from maestro.reference.options import TARGET_TYPES, ConversionOptions

log = logging.getLogger(__name__)


def _assignments(values: Sequence[str] | None, flag: str) -> dict[str, int]:
    out = {}
    for value in values or ():
        key, sep, number = value.partition("=")
        if not sep or not key or not number.isdigit():
            raise ConfigError(f"{flag} {value!r}: expected MODALITY=INTEGER (e.g. aerial=512)")
        out[key] = int(number)
    return out


def add_import_reference_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``import-reference`` to a ``maestro`` sub-command parser; its handler is
    :func:`run_import_reference` (set as both the ``func`` and the ``handler`` default)."""
    parser = subparsers.add_parser(
        "import-reference",
        help="convert a MAESTRO checkpoint of IGN's reference code into a model folder",
        description=(
            "Convert a Lightning checkpoint of the reference MAESTRO code (e.g. IGN's published "
            "hf:IGNF/MAESTRO_FLAIR-HUB_base) into a model folder (config.json + model.safetensors + README.md). "
            "The checkpoint is read without running any code it contains."
        ),
    )
    parser.add_argument("source", help="a .ckpt file or hf:org/name[@revision]")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument(
        "--weights", choices=["ema", "model"], default="ema", help="EMA weights (default) or the trained ones"
    )
    parser.add_argument(
        "--model-type",
        choices=TARGET_TYPES,
        default="maestro-mae",
        help="what to write: encoder + pretraining decoder (default), encoder only, or encoder + "
        "the checkpoint's segmentation head",
    )
    parser.add_argument("--target", help="segmentation head of the checkpoint to convert (maestro-segmenter)")
    parser.add_argument(
        "--num-classes", type=int, help="classes of that head, when the converter does not know them"
    )
    parser.add_argument(
        "--image-size",
        action="append",
        metavar="MOD=PX",
        help="image size of a modality, when it differs from the registry (repeatable)",
    )
    parser.add_argument(
        "--num-dates",
        action="append",
        metavar="MOD=N",
        help="dates of a time series, when they differ from the registry (repeatable)",
    )
    parser.add_argument(
        "--grid-size", type=int, help="position grid (default 160, the reference's FLAIR-HUB value)"
    )
    parser.add_argument(
        "--num-heads", type=int, help="encoder attention heads (default: the reference size's)"
    )
    parser.add_argument(
        "--decoder-heads", type=int, help="decoder attention heads (default: decoder width / 32)"
    )
    parser.add_argument("--licence", help="licence to state on the card (default: the source card's)")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder")
    parser.set_defaults(func=run_import_reference, handler=run_import_reference)
    return parser


def run_import_reference(args: argparse.Namespace) -> int:
    """Handler of ``maestro import-reference``: 0 on success, 2 on a user error (logged)."""
    try:
        overrides: dict[str, dict[str, int]] = {}
        for flag, name, values in (
            ("--image-size", "image_size", args.image_size),
            ("--num-dates", "num_dates", args.num_dates),
        ):
            for mod, number in _assignments(values, flag).items():
                overrides.setdefault(mod, {})[name] = number
        # The converter loads torch: imported once the flags are known to be good, for a fast answer.
        from maestro.reference.convert import import_reference

        out = Path(args.out)
        if (out / WEIGHTS_NAME).exists() and not args.force:
            raise FileExistsError(f"{out} already holds a {WEIGHTS_NAME}; pass --force to replace it")
        options = ConversionOptions(
            weights=args.weights,
            model_type=args.model_type,
            overrides=overrides,
            grid_size=args.grid_size,
            num_heads=args.num_heads,
            decoder_heads=args.decoder_heads,
            target=args.target,
            num_classes=args.num_classes,
        )
        folder = import_reference(args.source, out, options, licence=args.licence)
    except (ConfigError, FileExistsError, FileNotFoundError) as error:
        log.error("%s", error)
        return 2
    sys.stdout.write(f"wrote {folder}\n")
    return 0
