"""Which share of the work this process maps: its rank from the launcher's environment.

``predict`` is launched like ``pretrain``: one process per GPU, by ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) or by ``srun`` (``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NTASKS_PER_NODE``); run plainly it is rank 0 of 1.
No process group is formed: every rank plans the same units and takes its share
(:func:`predict.units.share`), so ranks share only the file system and a rank that dies costs only
its own units, which ``--resume`` maps later. torchrun's variables win over SLURM's (torchrun
started by srun).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from maestro.errors import ConfigError

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE")
LAUNCH = (
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
)
"""Variables the launcher sets alike on every rank of one launch, and differently on the next."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ConfigError(f"rank {self.rank} is not in a world of {self.world} process(es)")
        if self.local_world < 1 or not 0 <= self.local_rank < self.local_world:
            raise ConfigError(f"local rank {self.local_rank} is not among {self.local_world} on this node")

    @property
    def device(self) -> str:
        """The GPU of this process: one per local rank."""
        return f"cuda:{self.local_rank}"

    @property
    def launched(self) -> bool:
        return self.world > 1


def _int(env: Mapping[str, str], name: str) -> int:
    """An integer variable; SLURM's per-node counts may read ``4(x2)``: the first number is ours."""
    match = re.match(r"\s*(\d+)", env[name])
    if match is None:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not a number")
    return int(match.group(1))


def from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """This process's ranks from torchrun's variables, else SLURM's, else rank 0 of 1."""
    env = os.environ if env is None else env
    for rank, world, local_rank, local_world in (TORCHRUN, SLURM):
        if rank in env and world in env:
            local = _int(env, local_rank) if local_rank in env else 0
            per_node = _int(env, local_world) if local_world in env else _int(env, world)
            return Ranks(_int(env, rank), _int(env, world), local, max(per_node, local + 1))
    return Ranks()


def launch_id(env: Mapping[str, str] | None = None, agent: int | None = None) -> str | None:
    """The same string on every rank of one launch and a different one on the next (``None`` when
    the launcher says nothing), so ranks tell the run they start together from an earlier one.

    srun: the job and step ids. torchrun: its run id (``--rdzv-id``, a fresh one with
    ``--standalone``) and restart count; without a run id on one node, the torchrun agent (the
    ranks' parent) and its start time. Several nodes under torchrun need ``--rdzv-id`` per launch.
    """
    env = os.environ if env is None else env
    parts = [f"{name}={env[name]}" for name in LAUNCH if env.get(name) not in (None, "", "none")]
    torchrun = "TORCHELASTIC_RUN_ID" in env
    if (
        torchrun
        and env["TORCHELASTIC_RUN_ID"] in ("", "none")
        and "WORLD_SIZE" in env
        and env.get("LOCAL_WORLD_SIZE") == env["WORLD_SIZE"]
    ):
        parent = os.getppid() if agent is None else agent
        parts.append(f"agent={parent}@{_started(parent)}")
    return ";".join(parts) or None


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc; empty elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
