"""What every dataset's reader shares: one split's patches by index, and iteration that may skip.

A reader (:class:`maestro.data.flairhub.FlairHubReader`, :class:`maestro.data.flair2.Flair2Reader`)
lists its patches in ``_ids`` and reads one with :meth:`SplitReader.read`; this base gives it the
rest of :class:`maestro.datasets.DatasetReader`, so skipping works the same for every dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

from maestro.errors import DataError
from maestro.sample import Sample

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


class SplitReader:
    """Map-style access to one split (``reader[i]``, ``reader.read(patch_id)``: always raise on bad
    data) and iteration honouring ``on_error``: with ``'skip'`` a bad patch is logged, counted in
    :attr:`skipped` and kept in :attr:`skipped_errors`."""

    _ids: list[str]
    on_error: OnError
    skipped: int
    skipped_errors: list[DataError]

    def read(self, patch_id: str) -> Sample:
        raise NotImplementedError

    @property
    def patch_ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Sample:
        return self.read(self._ids[index])

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_samples()

    def iter_samples(self) -> Iterator[Sample]:
        """Every sample in split order; with ``on_error='skip'`` bad patches are skipped and counted."""
        for patch_id in self._ids:
            try:
                sample = self.read(patch_id)
            except DataError as error:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                self.skipped_errors.append(error)
                log.warning("skipping bad patch: %s", error)
                continue
            yield sample
