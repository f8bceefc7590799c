"""Linux process helpers for the tests that kill a parent and check its loader workers die with it."""

from __future__ import annotations

from pathlib import Path


def live_children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` and that still run (zombies are dead, waiting to be reaped)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(parent) == pid and state not in ("Z", "X"):
            children.append(int(stat.parent.name))
    return children


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
