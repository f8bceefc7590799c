"""``predict``: map a whole zone with a fine-tuned MAESTRO segmenter into one seamless GeoTIFF.

    predict --model example/runs/finetune/lc --zone zones/D033 --out maps/D033_lc.tif   # a finetune run
    predict --model hf:org/maestro-lc --zone zones/D033 --out maps/D033_lc.tif --probabilities float16
    shards toy --zone zones/toy && predict --model FOLDER --zone zones/toy --out toy.tif --device cpu

The zone is a folder of rasters named by modality (aerial.tif, dem.tif, s2.tif, s2_mask.tif,
s2_dates.json, ...; see the README, "Mapping a whole zone"). The map is a Cloud-Optimised GeoTIFF
on the finest input's grid: uint8 classes, 255 where an input is nodata or outside the zone.
Exit status 0 on success, 2 on a user error, 1 when a tile fails (the tile is named); a failed
run leaves no output file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rasterio.errors import RasterioError

from maestro.errors import ConfigError, DataError
from predict.options import PredictOptions, check_device_name, check_output, check_zone, find_model

log = logging.getLogger("predict")
USER_ERRORS = (ConfigError, DataError, FileNotFoundError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN|FOLDER|hf:org/name",
        help="fine-tuning run directory, model folder, or Hub model hf:org/name[@revision] (or org/name)",
    )
    parser.add_argument("--zone", required=True, help="zone folder (one raster per modality)")
    parser.add_argument("--out", required=True, help="output map, a .tif path (its folder is created)")
    parser.add_argument(
        "--probabilities",
        nargs="?",
        const="uint8",
        choices=["uint8", "float16"],
        help="also write per-class probabilities to {out}_probabilities.tif (default uint8 0-255)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="fraction of a tile shared with each neighbour, blended (default 0.25)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")
    parser.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument(
        "--weights",
        choices=["ema", "model"],
        default="ema",
        help="run directories: EMA (default) or trained weights",
    )
    parser.add_argument("--workers", type=int, default=2, help="threads reading tiles (default 2)")
    parser.add_argument(
        "--no-cloud-avoidance",
        action="store_true",
        help="pick dates without the cloud masks (s2_mask is then not needed)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def checked_options(args: argparse.Namespace) -> PredictOptions:
    """The options, once every flag and path that can be checked without the model is good."""
    options = PredictOptions(
        overlap=args.overlap,
        batch_size=args.batch_size,
        probabilities=args.probabilities,
        cloud_avoidance=not args.no_cloud_avoidance,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.device is not None:
        check_device_name(args.device)
    check_output(Path(args.out), options.overwrite, options.probabilities is not None)
    check_zone(Path(args.zone))
    find_model(args.model)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        options = checked_options(args)
    except USER_ERRORS as error:
        log.error("error: %s", error)
        return 2
    # torch and the network load once the arguments are known to be good: mistakes are refused at once
    from predict.engine import TileError, predict_zone, resolve_device
    from predict.model import load_model

    try:
        device = resolve_device(args.device)
        model = load_model(args.model, args.weights, device)
        predict_zone(model, args.zone, args.out, options, device)
    except TileError as error:
        user = isinstance(error.cause, USER_ERRORS)
        log.error("error: %s; no map was written", error)
        if args.verbose and not user:
            log.debug("cause", exc_info=error.cause)
        return 2 if user else 1
    except USER_ERRORS as error:
        log.error("error: %s", error)
        return 2
    except (OSError, RasterioError) as error:  # e.g. a full disk while writing: no traceback, no map
        log.error("error: %s: %s; no map was written", type(error).__name__, error)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; no map was written")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
