"""Command-line pieces every stage CLI shares: common flags, logging and user-error exits.

A stage CLI builds :func:`stage_parser`, adds its own flags and hands everything to
:func:`run_cli`; flags become dotted ``trainer.*`` overrides, so the YAML config stays the one
description of a run. The config is loaded and checked before ``run`` is called, and nothing here
imports torch or Lightning: a stage's ``run`` imports its training module, so ``--help`` and a
config mistake answer at once.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from maestro.config import load_config
from maestro.errors import ConfigError, DataError
from maestro.training.config import FP8, TrainerConfig

C = TypeVar("C")

TRAINER_FLAGS: tuple[tuple[str, str], ...] = (
    ("devices", "devices"),
    ("num_nodes", "num_nodes"),
    ("strategy", "strategy"),
    ("accelerator", "accelerator"),
    ("output_dir", "output_dir"),
)
"""(argparse destination, ``trainer.`` key) of the shortcut flags."""

USER_ERRORS = (ConfigError, DataError, FileExistsError, FileNotFoundError)
"""Errors caused by the config, the data or the run directory: one log line and exit 2."""


def stage_parser(
    prog: str, description: str | None, epilog: str | None = None, config_required: bool = True
) -> argparse.ArgumentParser:
    """Parser with the flags every stage takes; the stage may add its own. Without
    ``config_required`` the stage's config defaults apply when ``--config`` is not given."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument(
        "--config",
        required=config_required,
        help=f"YAML config (see configs/{prog}/)"
        + ("" if config_required else "; default: the built-in defaults"),
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    parser.add_argument("--devices", help="devices per node (int, 'auto', or a list like 0,1)")
    parser.add_argument("--num-nodes", type=int, help="number of nodes")
    parser.add_argument("--strategy", choices=["auto", "ddp", "fsdp"])
    parser.add_argument("--accelerator", help="cpu, gpu or auto")
    parser.add_argument("--output-dir", help="where checkpoints, logs and images go")
    # A flag, not an optional value: `--resume trainer.max_epochs=8` must not read the override as a path.
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in trainer.output_dir from its newest checkpoint",
    )
    parser.add_argument("--resume-from", metavar="CKPT", help="continue the run from this checkpoint")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def parse_stage_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse a stage command line whose ``key=value`` overrides may come before, between or after
    the flags: plain ``parse_args`` takes only the first run of positionals and rejects the rest."""
    return parser.parse_intermixed_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    """The positional overrides followed by the shortcut flags as ``trainer.*`` overrides."""
    overrides = list(args.overrides)
    for flag, key in TRAINER_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"trainer.{key}={value}")
    return overrides


def resume_from(args: argparse.Namespace) -> str | None:
    """What ``run`` resumes: a checkpoint path, ``"last"`` (the run's newest) or None (a fresh run)."""
    return args.resume_from or ("last" if args.resume else None)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )


def check_hardware(config: object) -> None:
    """Refuse, before the stage reads data or builds a model, a precision the machine cannot run:
    ``trainer.precision=fp8`` on CPU, on GPUs without FP8 units or without torchao."""
    trainer = getattr(config, "trainer", None)
    if isinstance(trainer, TrainerConfig) and trainer.precision == FP8:
        # Imported only for an FP8 run: it loads torch, which --help and other refusals never pay for.
        from maestro.training.fp8 import check_supported

        check_supported(trainer)


def run_cli(
    parser: argparse.ArgumentParser,
    config_class: type[C],
    run: Callable[[C, str | None], Any],
    argv: Sequence[str] | None = None,
    extra_overrides: Callable[[argparse.Namespace], Sequence[str]] | None = None,
) -> int:
    """Parse, load the config, call ``run(config, resume)``; 0 on success, 2 on a user error, 143
    (128 + SIGTERM, what schedulers expect of a terminated job) when a SIGTERM stopped training.

    ``extra_overrides`` turns the stage's own flags into dotted overrides (applied last).
    """
    args = parse_stage_args(parser, argv)
    setup_logging(args.verbose)
    log = logging.getLogger(parser.prog)
    try:
        overrides = overrides_from(args) + list(extra_overrides(args) if extra_overrides is not None else ())
        config = load_config(config_class, args.config, overrides)
        check_hardware(config)
    except ConfigError as error:
        log.error("invalid configuration: %s", error)
        return 2
    try:
        run(config, resume_from(args))
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2
    except SystemExit as stopped:  # Lightning's SIGTERMException would exit 0 as if the run had finished
        # Imported here, where the run has loaded Lightning: every stage's --help and config errors skip it.
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(stopped, SIGTERMException):
            raise
        # run_stage says whether a checkpoint exists to resume from (nothing is saved before the first)
        advice = getattr(stopped, "advice", "--resume continues the run from its newest checkpoint")
        log.warning("stopped by SIGTERM (every rank at the same step); %s", advice)
        return 143
    return 0
