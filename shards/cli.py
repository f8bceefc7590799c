"""``shards`` command line: toy dataset, build, verify, stats."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("shards")


def _cmd_toy(args: argparse.Namespace) -> int:
    from maestro.data.toy import write_toy_dataset

    summary = write_toy_dataset(Path(args.out), num_patches=args.patches, seed=args.seed)
    log.info("%s", summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shards", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser("toy", help="write a small synthetic dataset in the FLAIR-HUB layout")
    toy.add_argument("--out", required=True, help="output directory (created; must be empty or absent)")
    toy.add_argument("--patches", type=int, default=200, help="number of patches (default 200)")
    toy.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    toy.set_defaults(func=_cmd_toy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
