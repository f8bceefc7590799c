"""``shards`` command line: toy dataset, dates tables, build, fill, verify, stats (see ``docs/shards.md``).

User mistakes and bad data end with one ``error:`` line and exit status 2 (the traceback only
with ``--verbose``); ``verify`` exits 1 when it finds problems. Each command imports its module
when it runs, after its arguments are checked: the shard writer and readers load torch (through
webdataset), which ``--help`` and a mistyped argument should not wait for.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from maestro.data.layout import SPLIT_NAME
from maestro.datasets import DATASETS, DEFAULT_DATASET, get_dataset
from maestro.errors import ConfigError, DataError
from shards.fill_config import METHODS, FillConfig
from shards.manifest import read_manifest
from shards.plan import DEFAULT_MODALITIES, BuildConfig, parse_size

log = logging.getLogger("shards")


def _cmd_toy(args: argparse.Namespace) -> int:
    dataset = get_dataset(args.dataset)
    if args.zone:
        if dataset.key != DEFAULT_DATASET:
            raise ConfigError(f"--zone writes a FLAIR-HUB toy zone; it takes no --dataset {dataset.key}")
        from maestro.data.toy.zone import write_toy_zone

        write_toy_zone(Path(args.zone), size_m=args.size_m, seed=args.seed)
        return 0
    import maestro.data.zoo as zoo

    toy = zoo.toy_generator(dataset.key)
    patches = toy.patches if args.patches is None else args.patches
    if patches < toy.min_patches:
        raise ConfigError(
            f"--patches must be at least {toy.min_patches} for a {dataset.name} toy (every split "
            f"gets patches), got {patches}"
        )
    out = Path(args.out)
    created = not out.exists()
    try:
        summary = toy.write(out, patches, args.seed)
    except BaseException:
        if created:  # only what this run wrote is in there; the refusal of a non-empty --out creates nothing
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("%s", summary)
    return 0


def _cmd_dates(args: argparse.Namespace) -> int:
    from maestro.data.dates_csv import read_dates_csv, write_dates_geopackages

    root = Path(args.root)
    if not root.is_dir():
        raise DataError("dataset root is not a directory", path=root)
    tables = read_dates_csv(Path(args.from_csv), root, split_name=args.split_name)
    write_dates_geopackages(tables, root, force=args.force)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    import maestro.data.zoo  # noqa: F401  (registers the readers and data config loaders; no torch)

    if args.data_config is not None and args.root is not None:
        raise ConfigError("--data-config gives the dataset's folders; it takes no --root")
    if args.data_config is None and args.root is None:
        raise ConfigError("--root is required (a custom dataset: --data-config)")
    root = Path(args.data_config).parent if args.data_config is not None else Path(args.root)
    if args.split_csv and len(args.split) > 1:
        raise ConfigError(
            f"--split-csv lists the patches of one split, but --split names {args.split}; "
            "run one build per split CSV (same --out)"
        )
    configs = [
        BuildConfig(
            root=root,
            out=Path(args.out),
            split=split,
            modalities=None if args.modalities is None else tuple(args.modalities),
            max_size=parse_size(args.max_size),
            max_count=args.max_count,
            workers=args.workers,
            split_name=args.split_name,
            split_csv=Path(args.split_csv) if args.split_csv else None,
            skip_bad=args.skip_bad,
            seed=None if args.no_shuffle else args.seed,
            progress=not args.no_progress,
            force=args.force,
            allow_nan=args.allow_nan,
            dataset=args.dataset or ("custom" if args.data_config is not None else DEFAULT_DATASET),
            data_config=Path(args.data_config) if args.data_config is not None else None,
        )
        for split in args.split
    ]  # all validated before the first split is written, and before the writer loads torch (webdataset)
    from shards.writer import build

    for config in configs:
        build(config)
    return 0


def _cmd_fill(args: argparse.Namespace) -> int:
    read_manifest(Path(args.source))  # refused before the network and the writer load torch
    config = FillConfig(
        source=Path(args.source),
        out=Path(args.out),
        method=args.method,
        model=args.model,
        splits=None if args.split is None else tuple(args.split),
        cloud_threshold=args.cloud_threshold,
        cloudy_date_fraction=args.cloudy_date_fraction,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    from shards.fill import fill

    fill(config)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from shards.verify import verify

    report = verify(Path(args.out), args.split, decode=not args.no_decode, workers=args.workers)
    for is_problem, line in report.lines():
        log.log(logging.ERROR if is_problem else logging.INFO, "%s", line)
    return 0 if report.ok else 1


def _cmd_stats(args: argparse.Namespace) -> int:
    read_manifest(Path(args.out))  # a missing or broken manifest is refused before the readers load torch
    from shards.stats import compute_stats, write_stats

    stats = compute_stats(Path(args.out), args.split, modalities=args.modalities, workers=args.workers)
    path = write_stats(Path(args.out), stats)
    for modality, entry in stats["modalities"].items():
        nonfinite = sum(entry["nonfinite"])
        log.log(
            logging.WARNING if nonfinite else logging.INFO,
            "%s: mean %s std %s, non-finite values (NaN/inf, left out) %d%s",
            modality,
            _rounded(entry["mean"]),
            _rounded(entry["std"]),
            nonfinite,
            f" per band {entry['nonfinite']}" if nonfinite else "",
        )
    log.info("wrote %s (%d samples)", path, stats["samples"])
    return 0


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 4) for v in values]


_DATASET_HELP = f"dataset of the registry: {', '.join(sorted(DATASETS))} (default {DEFAULT_DATASET})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shards", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser(
        "toy", help="write a small synthetic dataset in the FLAIR-HUB (or --dataset's) layout, or a toy zone"
    )
    target = toy.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output directory (created; must be empty or absent)")
    target.add_argument(
        "--zone", help="write a toy zone for `predict` instead (created; must be empty or absent)"
    )
    toy.add_argument(
        "--size-m", type=float, default=400.0, help="--zone: side of the zone in metres (default 400)"
    )
    toy.add_argument(
        "--patches",
        type=int,
        help="number of patches (default: 200 for flair-hub, 16 for flair2, 24 for custom)",
    )
    toy.add_argument("--dataset", default=DEFAULT_DATASET, help=_DATASET_HELP)
    toy.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    toy.set_defaults(func=_cmd_toy)

    dates = sub.add_parser(
        "dates", help="write the dates GeoPackages (GLOBAL_ALL_MTD/) of a FLAIR-HUB tree from a CSV"
    )
    dates.add_argument("--root", required=True, help="FLAIR-HUB root directory holding the rasters")
    dates.add_argument(
        "--from-csv",
        required=True,
        metavar="CSV",
        help="UTF-8 CSV with columns patch_id,modality,dates (dates: YYYYMMDD separated by spaces or "
        "semicolons, in raster order); see docs/shards.md",
    )
    dates.add_argument(
        "--split-name", default=SPLIT_NAME, help="split folder listing raster paths (default %(default)s)"
    )
    dates.add_argument("--force", action="store_true", help="replace existing dates GeoPackages")
    dates.set_defaults(func=_cmd_dates)

    build = sub.add_parser("build", help="write WebDataset shards of one or more splits")
    build.add_argument("--root", help="dataset root directory (FLAIR-HUB by default)")
    build.add_argument("--dataset", help=_DATASET_HELP + "; custom with --data-config")
    build.add_argument(
        "--data-config",
        metavar="YAML",
        help="--dataset custom: the data config of your own dataset (folders, patch CSV, nomenclature)",
    )
    build.add_argument("--split", nargs="+", default=["train"], help="split(s) to build (default train)")
    build.add_argument("--out", required=True, help="shard directory (created; shared by all splits)")
    build.add_argument(
        "--modalities",
        nargs="+",
        help="modalities to store; masks follow their images (default: the dataset's inputs and labels, "
        f"for flair-hub {' '.join(DEFAULT_MODALITIES)})",
    )
    build.add_argument("--max-size", default="1GB", help="target shard size, e.g. 1GB, 500MiB (default 1GB)")
    build.add_argument("--max-count", type=int, default=10_000, help="max samples per shard (default 10000)")
    build.add_argument("--workers", type=int, default=1, help="processes writing shards (default 1)")
    build.add_argument("--split-name", default=SPLIT_NAME, help="split folder (default %(default)s)")
    build.add_argument("--split-csv", help="explicit split CSV instead of {root}/{split-name}/{split}.csv")
    build.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip patches the reader rejects (counted and listed in the manifest) instead of stopping",
    )
    build.add_argument(
        "--force",
        action="store_true",
        help="rewrite every shard of the split; by default a rerun keeps finished shards whose "
        "sources are unchanged",
    )
    build.add_argument(
        "--allow-nan",
        action="store_true",
        help="keep NaN/inf pixels of float rasters (Sentinel-1 borders) instead of rejecting the "
        "patch; train with preprocessing nan_policy: fill",
    )
    build.add_argument("--seed", type=int, default=0, help="seed shuffling patches across shards (default 0)")
    build.add_argument("--no-shuffle", action="store_true", help="keep split-CSV order")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_cmd_build)

    fill = sub.add_parser(
        "fill",
        help="write a copy of a shard set whose cloudy Sentinel-2 dates are dropped, interpolated or "
        "restored by a gap-filling model",
    )
    fill.add_argument("--from", dest="source", required=True, metavar="SHARDS", help="source shard directory")
    fill.add_argument("--out", required=True, help="new shard directory (not inside --from)")
    fill.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="drop the cloudy dates, fill cloudy pixels by linear interpolation in time, or restore them "
        "with --model",
    )
    fill.add_argument(
        "--model", help="--method model: a gapfill run, checkpoint, model folder or hf:org/name"
    )
    fill.add_argument("--split", nargs="+", help="splits to fill (default: every split of --from)")
    fill.add_argument(
        "--cloud-threshold",
        type=float,
        help="a pixel is cloudy when a band of its mask exceeds this "
        "(default 0; --method model: the model's own)",
    )
    fill.add_argument(
        "--cloudy-date-fraction",
        type=float,
        default=FillConfig.cloudy_date_fraction,
        help="--method drop: drop dates cloudy on more than this share of their pixels (default %(default)s)",
    )
    fill.add_argument(
        "--device", default=FillConfig.device, help="--method model: torch device (default %(default)s)"
    )
    fill.add_argument(
        "--batch-size",
        type=int,
        default=FillConfig.batch_size,
        help="--method model: samples restored per pass of the network (default %(default)s)",
    )
    fill.add_argument("--no-progress", action="store_true", help="no progress bar")
    fill.set_defaults(func=_cmd_fill)

    verify = sub.add_parser("verify", help="check shards against the manifest (checksums, counts, decoding)")
    verify.add_argument("out", help="shard directory (or its manifest.json)")
    verify.add_argument("--split", nargs="+", help="splits to check (default: all in the manifest)")
    verify.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    verify.add_argument("--no-decode", action="store_true", help="only files, sizes and checksums")
    verify.set_defaults(func=_cmd_verify)

    stats = sub.add_parser("stats", help="per-band statistics per modality, written to stats.json")
    stats.add_argument("out", help="shard directory (or its manifest.json)")
    stats.add_argument("--split", nargs="+", default=["train"], help="splits to pool (default train)")
    stats.add_argument("--modalities", nargs="+", help="default: every image and mask modality in the shards")
    stats.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    stats.set_defaults(func=_cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except (DataError, ConfigError, OSError) as error:
        log.error("error: %s", error, exc_info=args.verbose)
        return 2


if __name__ == "__main__":
    sys.exit(main())
