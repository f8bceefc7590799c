"""Errors raised on bad input data, always naming what was wrong and where."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: names the patch (or shard) and the file, and says what is wrong."""

    def __init__(self, problem: str, *, patch_id: str | None = None, path: str | Path | None = None):
        self.problem = problem
        self.patch_id = patch_id
        self.path = str(path) if path is not None else None
        where = []
        if patch_id is not None:
            where.append(f"patch {patch_id}")
        if path is not None:
            where.append(f"file {path}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


class ConfigError(ValueError):
    """A configuration that cannot work, detected before any training starts."""
