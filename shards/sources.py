"""What each shard was built from, so that a resumed build notices changed inputs.

For every patch of a shard the build records the reader's ``source_state``: per modality the
raster's path, size and ``mtime_ns``, per dates table the patch's row. A resumed build compares
the recorded state with the current one and rewrites a shard when any of its patches changed (an
edited tile, a fixed corrupt file, a corrected dates row). Size + mtime is what ``make`` and
``rsync`` trust: cheap (one ``stat`` per file, no re-reading a terabyte of rasters) and updated by
every ordinary write; a tool that rewrites a file and restores both is not noticed, which is what
``--force`` is for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

PatchSources = dict[str, Any]
"""One patch's state as the reader gives it (JSON)."""


def shard_sources(reader: Any, patch_ids: Iterable[str]) -> dict[str, PatchSources]:
    """patch_id -> source state, taken *before* the patches are read: a file changed during the
    build then differs from the record and is picked up by the next run."""
    return {patch_id: reader.source_state(patch_id) for patch_id in patch_ids}


def sources_digest(sources: Mapping[str, PatchSources]) -> str:
    """One sha256 over a shard's source states (the manifest's per-shard ``sources_sha256``)."""
    return hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()


def _describe(key: str, before: Any, now: Any) -> str:
    if key.startswith("dates:"):
        return f"dates row in {key.removeprefix('dates:')} changed"
    if before is None or now is None:
        return f"{key} raster {'added' if before is None else 'removed'} in the split CSV"
    if before[0] != now[0]:
        return f"{key} raster is now {now[0]} (was {before[0]})"
    if now[1] is None:
        return f"{key} raster {now[0]} is missing"
    if before[1] is None:
        return f"{key} raster {now[0]} appeared"
    return f"{key} raster {now[0]} was modified (size/mtime)"


def first_change(recorded: Mapping[str, PatchSources], current: Mapping[str, PatchSources]) -> str | None:
    """How a shard's sources changed (first patch and file, in shard order), or ``None``."""
    for patch_id, now in current.items():
        before = recorded.get(patch_id)
        if before is None:
            return f"patch {patch_id}: no source record"
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                return f"patch {patch_id}: {_describe(key, before.get(key), now.get(key))}"
    return None
