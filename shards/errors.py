"""Data errors in the streaming loader: raise or skip, and carrying a worker's error to the caller."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from torch.utils.data import get_worker_info

from maestro.errors import DataError

log = logging.getLogger("shards.loader")
"""The loader's logger: skip warnings read as the loader's."""

OnError = Literal["raise", "skip"]


@dataclass
class ErrorPolicy:
    """Raise, or log and count (per process) and go on."""

    on_error: OnError
    skipped: int = 0

    def handle(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped += 1
        log.warning("skipping (%d skipped so far in this process): %s", self.skipped, error)


@dataclass(frozen=True)
class WorkerDataError:
    """A DataError from a data-loader worker, carried to the main process as an item.

    torch re-raises a worker's exception as ``type(error)(text)``, the text being a header plus the
    whole worker traceback, so the user-facing one-line message would be lost; sent as data, the
    message and its fields arrive intact and :class:`ShardLoader` raises them again.
    """

    problem: str
    patch_id: str | None
    path: str | None
    worker_traceback: str

    def error(self) -> DataError:
        error = DataError(self.problem, patch_id=self.patch_id, path=self.path)
        error.add_note(f"raised in a data-loader worker:\n{self.worker_traceback.rstrip()}")
        return error


@dataclass
class ForwardWorkerErrors:
    """Last stage: in a worker process, a DataError ends that worker's stream as a
    :class:`WorkerDataError` item; in the main process errors propagate unchanged."""

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        if get_worker_info() is None:
            yield from src
            return
        try:
            yield from src
        except DataError as error:
            yield WorkerDataError(error.problem, error.patch_id, error.path, traceback.format_exc())
