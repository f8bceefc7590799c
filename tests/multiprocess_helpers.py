"""Helpers for tests that start several processes: a free localhost port, ranks forked from the
test process, and a worker script under torchrun; none can hang CI (every wait has a timeout)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    """A localhost TCP port nothing listens on now (for a gloo rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_forked_ranks(target: Callable[..., None], world_size: int, *args: Any, timeout: float = 60) -> None:
    """Run ``target(rank, world_size, port, *args)`` in ``world_size`` forked processes and fail the
    test unless all exit with 0 within ``timeout`` seconds each. Forked ranks start at once with
    everything already imported; spawned ones would re-import torch."""
    context = mp.get_context("fork")
    port = free_port()
    ranks = [
        context.Process(target=target, args=(rank, world_size, port, *args)) for rank in range(world_size)
    ]
    for process in ranks:
        process.start()
    try:
        for process in ranks:
            process.join(timeout=timeout)
        hung = [process.pid for process in ranks if process.is_alive()]
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
                process.join()
    assert not hung, f"gloo ranks {hung} timed out"
    assert [process.exitcode for process in ranks] == [0] * world_size


def run_torchrun(worker: Path, *args: str, nproc: int = 2, timeout: float = 300) -> str:
    """Run ``worker`` under ``torchrun --nproc_per_node nproc`` on CPU threads of one each, with the
    repository on its path; return its output (stdout and stderr), failing the test on a timeout
    (the whole process group is killed, so no rank lingers) or a non-zero exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    process = subprocess.Popen(
        [*command, f"--master_port={free_port()}", str(worker), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun {worker.name} timed out:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output
