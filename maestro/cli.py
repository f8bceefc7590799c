"""``maestro``: the suite's model commands (the training stages have their own: pretrain, finetune).

    maestro publish example/runs/pretrain --repo org/name --dry-run --out hub/encoder   # look first
    maestro publish example/runs/pretrain --repo org/name                       # EMA encoder -> the Hub
    maestro publish example/runs/pretrain --repo org/name --what mae --revision mae   # the MAE, on a branch
    maestro publish example/runs/finetune/lc --repo org/name-lc --private       # segmenter + test scores
    maestro publish runs/finetune/lc-level1-swin-utae --repo org/swin-utae-lc   # the supervised baseline
    maestro download org/name@v1.0                                              # into the HF cache
    maestro import-reference hf:IGNF/MAESTRO_FLAIR-HUB_base --out hub/reference # IGN's reference weights

Exit status 0 on success, 2 on a user error (one log line saying what to do).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from maestro.errors import ConfigError

log = logging.getLogger("maestro")
USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError)


def _publish(args: argparse.Namespace) -> int:
    # Publishing builds the run's network to check its weights: the zoo imports (and registers) them.
    from maestro.models.zoo import publish

    result = publish(
        args.source,
        args.repo,
        what=args.what,
        weights=args.weights,
        private=args.private,
        revision=args.revision,
        out=args.out,
        dry_run=args.dry_run,
        commit_message=args.message,
    )
    if args.dry_run:
        sys.stdout.write(result.card)
        where = f"kept in {result.folder}" if result.folder else "not kept (pass --out FOLDER to keep it)"
        log.info("dry run: nothing uploaded; the model folder is %s", where)
    else:
        log.info("published to https://huggingface.co/%s: %s", args.repo, result.url)
    return 0


def _download(args: argparse.Namespace) -> int:
    from maestro.hub.remote import download

    sys.stdout.write(f"{download(args.repo)}\n")
    return 0


def _add_optional_commands(commands: argparse._SubParsersAction) -> None:
    """Commands whose module registers itself (``add_*_parser`` setting ``func``), when installed:
    ``import-reference`` (checkpoints of IGN's reference MAESTRO code -> model folders)."""
    try:
        from maestro.reference.cli import add_import_reference_parser
    except ImportError:
        return
    add_import_reference_parser(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maestro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    publish = commands.add_parser("publish", help="publish a pretrain or finetune run's weights on the Hub")
    publish.add_argument(
        "source", metavar="RUN_OR_CKPT", help="run directory or .ckpt file (pretrain or finetune)"
    )
    publish.add_argument("--repo", required=True, help="Hub repo id org/name (created if needed)")
    publish.add_argument(
        "--what",
        choices=["encoder", "mae", "segmenter"],
        help="pretrain runs: encoder (default) or mae; finetune runs: segmenter (default) or encoder",
    )
    publish.add_argument(
        "--weights",
        choices=["ema", "model"],
        default="ema",
        help="EMA weights when the checkpoint has them (default) or the trained ones",
    )
    publish.add_argument("--private", action="store_true", help="create the repo private")
    publish.add_argument("--revision", help="branch to commit to (created from main if needed)")
    publish.add_argument("--out", help="write the model folder here and keep it (an empty or new folder)")
    publish.add_argument(
        "--dry-run", action="store_true", help="write the folder and print the card; no network"
    )
    publish.add_argument("--message", help="commit message")
    publish.set_defaults(func=_publish)

    download = commands.add_parser("download", help="fetch org/name[@revision] into the Hugging Face cache")
    download.add_argument("repo", help="org/name or org/name@revision")
    download.set_defaults(func=_download)
    _add_optional_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
