"""``predict``: map a zone, or many, with a fine-tuned MAESTRO segmenter into seamless GeoTIFF maps.

    predict --model example/runs/finetune/lc --zone zones/D033 --out maps/D033_lc.tif   # a finetune run
    predict --model hf:org/maestro-lc --zone zones/D033 --out maps/D033_lc.tif --probabilities float16
    predict --model hf:org/maestro-lc --zones zones/ --out maps/france            # every sub-folder
    predict --model example/runs/gapfill --reconstruct s2 --zone zones/D033 --out maps/D033_s2_filled.tif
    torchrun --nproc-per-node 8 -m predict.cli --model M --zones zones.txt --out maps/france --resume

The zone is a folder of rasters named by modality (aerial.tif, dem.tif, s2.tif, s2_mask.tif,
s2_dates.json, ...; see the README, "Mapping a whole zone"). With --zone the map is one
Cloud-Optimised GeoTIFF on the finest input's grid: uint8 classes, 255 where an input is nodata or
outside the zone. With --zones (a folder of zone folders, or a text file listing them) OUTDIR gets
per zone a folder of unit COGs, a VRT over them and a STAC Item, plus mosaic.vrt and
predict_report.json (README, "Mapping many zones"). Under torchrun or srun the processes share the
work. Finished units are recorded: after a stop, --resume maps only what is missing.
Exit status 0 on success, 2 on a user error, 1 when a tile fails (the tile is named), 143 after
SIGTERM and 130 after Ctrl-C (finished units are kept for --resume).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rasterio.errors import RasterioError

from maestro.errors import ConfigError, DataError
from predict.options import (
    PredictOptions,
    check_device_name,
    check_outdir,
    check_output,
    check_zone,
    find_model,
    zone_folders,
)
from predict.ranks import Ranks, from_env, launch_id

log = logging.getLogger("predict")
USER_ERRORS = (ConfigError, DataError, FileNotFoundError, FileExistsError)
EXIT_SIGNAL = {signal.SIGTERM: 143, signal.SIGINT: 130}


def _auto_int(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {text!r}") from None


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
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--zone", help="one zone folder (one raster per modality) -> one map, --out map.tif")
    what.add_argument(
        "--zones",
        metavar="LIST_OR_DIR",
        help="many zones: a folder whose sub-folders are zones, or a text file with one zone folder a line",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="with --zone, the map (.tif; its folder is created); with --zones, a folder",
    )
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
    parser.add_argument(
        "--batch-size",
        type=_auto_int,
        default=None,
        metavar="auto|N",
        help="tiles per forward pass (default auto: 8 on CPU, 32 on a GPU, halved when out of memory)",
    )
    parser.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available; cuda:LOCAL_RANK)")
    parser.add_argument(
        "--weights",
        choices=["ema", "model"],
        default="ema",
        help="run directories: EMA (default) or trained weights",
    )
    parser.add_argument(
        "--workers",
        type=_auto_int,
        default=None,
        metavar="auto|N",
        help="processes reading tiles (default auto: this process's share of the cores; 0: in-process)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (long GPU runs)")
    parser.add_argument(
        "--unit-px",
        type=int,
        default=PredictOptions.unit_px,
        help=f"side of a work unit in output pixels, a multiple of 256 (default {PredictOptions.unit_px})",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue a stopped run: map only the missing units"
    )
    again.add_argument("--force", action="store_true", help="discard an earlier run in --out and start over")
    parser.add_argument(
        "--no-cloud-avoidance",
        action="store_true",
        help="pick dates without the cloud masks (s2_mask is then not needed)",
    )
    parser.add_argument(
        "--reconstruct",
        choices=["s2"],
        help="--zone: write the series with its cloudy pixels restored by a cloud-removal model "
        "(a gapfill run) instead of a map: restored bands, then one 'reconstructed' band per date",
    )
    parser.add_argument("--overwrite", action="store_true", help="--zone: replace an existing map")
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
        compile=args.compile,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        unit_px=args.unit_px,
    )
    if args.device is not None:
        check_device_name(args.device)
    if args.reconstruct is not None and (args.zones is not None or args.probabilities is not None):
        raise ConfigError(
            "--reconstruct writes one zone's series: it takes --zone, not --zones or --probabilities"
        )
    if args.zone is not None:
        check_output(Path(args.out), options.overwrite, options.probabilities is not None)
        check_zone(Path(args.zone))
    else:
        if args.overwrite:
            raise ConfigError("--overwrite is for --zone; with --zones use --resume or --force")
        check_outdir(Path(args.out))
        zone_folders(Path(args.zones))
    find_model(args.model)
    return options


class StopFlag:
    """Set by SIGTERM or SIGINT while mapping: the mapper drops the unit in flight and the run ends
    cleanly (a second Ctrl-C interrupts at once). The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        self._previous = {number: signal.signal(number, self._handle) for number in EXIT_SIGNAL}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signal = number
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("%s: stopping after the batch in flight", signal.Signals(number).name)

    def __call__(self) -> bool:
        return self.signal is not None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ranks = from_env()
    prefix = f"[rank {ranks.rank}] " if ranks.launched else ""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=prefix + "%(message)s")
    try:
        options = checked_options(args)
    except USER_ERRORS as error:
        log.error("error: %s", error)
        return 2
    if args.reconstruct is not None:
        return _reconstruct(args, options, ranks)
    # torch and the network load once the arguments are known to be good: mistakes are refused at once
    from predict.engine import TileError
    from predict.model import load_model
    from predict.run import Request, device_for, map_units, summary_of

    single = args.zone is not None
    out = Path(args.out).expanduser().resolve()
    zones = {Path(args.zone).name: Path(args.zone)} if single else zone_folders(Path(args.zones))
    request = Request(zones, out, single, args.resume, args.force, args.weights)
    failed = "no map was written" if single else "finished units are kept: fix it and run again with --resume"
    try:
        with StopFlag() as stop:
            device = device_for(args.device, ranks)
            model = load_model(args.model, args.weights, device)
            outcome = map_units(model, request, options, device, ranks, launch_id(), stop)
    except TileError as error:
        user = isinstance(error.cause, USER_ERRORS)
        log.error("error: %s; %s", error, failed)
        if args.verbose and not user:
            log.debug("cause", exc_info=error.cause)
        return 2 if user else 1
    except USER_ERRORS as error:
        log.error("error: %s", error)
        return 2
    except (OSError, RasterioError) as error:  # e.g. a full disk while writing: no traceback
        log.error("error: %s: %s; %s", type(error).__name__, error, failed)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; %s", failed)
        return 130
    if outcome.stopped:
        name = signal.Signals(stop.signal or signal.SIGTERM).name
        log.warning(
            "stopped by %s: %d of %d units done; run again with --resume", name, outcome.done, outcome.total
        )
        return EXIT_SIGNAL[signal.Signals(stop.signal or signal.SIGTERM)]
    if single and outcome.done == outcome.total:
        summary = summary_of(outcome)
        if summary.paths:
            log.info(
                "wrote %s: %d x %d px, %.4g km2 in %.1f s (%.4g km2/h), %d tiles, %.1f%% nodata",
                ", ".join(map(str, summary.paths)), summary.width, summary.height, summary.area_km2,
                summary.seconds, summary.km2_per_hour, summary.tiles, 100 * summary.nodata_fraction,
            )  # fmt: skip
    return 0


def _reconstruct(args: argparse.Namespace, options: PredictOptions, ranks: Ranks) -> int:
    """``--reconstruct``: one zone's series restored (:mod:`predict.reconstruct`)."""
    from predict.reconstruct import load_gapfill, reconstruct_zone
    from predict.run import device_for

    try:
        device = device_for(args.device, ranks)
        model = load_gapfill(args.model, args.weights, device)
        reconstruct_zone(
            model, Path(args.zone), Path(args.out), batch_size=options.batch_size or 16,
            progress=options.progress,
        )  # fmt: skip
    except USER_ERRORS as error:
        log.error("error: %s", error)
        return 2
    except (OSError, RasterioError) as error:
        log.error("error: %s: %s; nothing usable was written", type(error).__name__, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
