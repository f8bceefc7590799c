"""Agreeing on a SIGTERM across ranks without stopping the GPU pipeline on every step.

Lightning 2.6 makes every rank stop at the same step when rank 0 is sent SIGTERM (a preempted
SLURM or Kubernetes job): rank 0's signal handler broadcasts a flag, and every rank takes part in
a broadcast of it before each training batch. Both broadcasts are tensors on the training device
read back with ``.item()``: on GPUs a host-device sync per step (Lightning issue 21487), so the
host can never queue the next step while the GPU finishes the current one, and with several GPUs
each step's host work (fetching the batch, DDP's forward prologue, launching the compiled graph)
shows up as idle GPU time.

:class:`HostSideStopSignal` keeps the guarantee and moves the flag to a CPU (gloo) process group:
the signal handler only records the signal, and before each training batch the ranks agree on
whether any of them was signalled: a few bytes between their host processes, with no GPU work and
no device sync. Both of Lightning's broadcasts are replaced together (one without the other would
leave an unmatched collective on the training group).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

_LOOP_BROADCAST = "_broadcast_sigterm_tensor"
"""The method of Lightning's training epoch loop that broadcasts the flag (Lightning >= 2.6)."""
_SIGNAL_HANDLER = "_sigterm_notifier_fn"
"""The SIGTERM handler of Lightning's signal connector (registered when ``fit`` starts running)."""


def agree_on_stop(received: bool, group: dist.ProcessGroup | None) -> bool:
    """Whether any rank of ``group`` received SIGTERM, the same answer on every rank (a maximum
    over the ranks' flags, on the host)."""
    flag = torch.tensor([int(received)], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item())


class HostSideStopSignal(L.Callback):
    """Replaces Lightning's SIGTERM broadcasts on the device by one agreement per training batch
    over a gloo group of the same ranks (see the module docstring). Does nothing in a single
    process, or if the installed Lightning has no such broadcast.

    A signal is only recorded when it arrives; the ranks act on it together at the next batch
    boundary. Lightning's own handling flags the trainer at once, which makes the signalled rank
    leave after its current step while the others wait for it in the next collective; and where
    Lightning listens to rank 0 only, a signal on any rank stops the run here.
    """

    def __init__(self) -> None:
        self.group: dist.ProcessGroup | None = None
        self.signalled = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not (dist.is_available() and dist.is_initialized()) or trainer.world_size < 2:
            return
        loop, connector = trainer.fit_loop.epoch_loop, trainer._signal_connector
        if not (
            callable(getattr(loop, _LOOP_BROADCAST, None))
            and callable(getattr(connector, _SIGNAL_HANDLER, None))
        ):
            log.debug("this Lightning has no per-step SIGTERM broadcast; its own handling stays")
            return
        # Every rank runs setup, so every rank takes part in creating the group, as it must.
        self.group = dist.new_group(backend="gloo")
        self.signalled = False

        def record_signal(signum: int, frame: object) -> None:
            log.info(
                "rank %d received signal %d: all ranks stop after this step", trainer.global_rank, signum
            )
            if not self.signalled and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)  # processes this one launched, as Lightning does
            self.signalled = True

        def agree_before_each_batch() -> None:
            if agree_on_stop(self.signalled, self.group):
                connector.received_sigterm = True  # what the rest of Lightning looks at
                raise SIGTERMException()

        # Instance attributes shadow the methods; Lightning registers the handler after setup.
        setattr(connector, _SIGNAL_HANDLER, record_signal)
        setattr(loop, _LOOP_BROADCAST, agree_before_each_batch)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.group is not None:
            vars(trainer.fit_loop.epoch_loop).pop(_LOOP_BROADCAST, None)
            vars(trainer._signal_connector).pop(_SIGNAL_HANDLER, None)
            dist.destroy_process_group(self.group)
            self.group = None
