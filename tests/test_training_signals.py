"""SIGTERM agreement between ranks on the host: rank 0's signal stops every rank at the same step,
through Lightning's real DDP loop under ``torchrun`` (gloo), with the device broadcasts replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from maestro.training.signals import _LOOP_BROADCAST, _SIGNAL_HANDLER, HostSideStopSignal, agree_on_stop

REPO = Path(__file__).resolve().parents[1]


def _agree(rank: int, received: list[bool], out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=2)
    try:
        (out / f"rank{rank}").write_text(json.dumps(agree_on_stop(received[rank], None)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("received", "expected"), [([True, False], True), ([False, True], True), ([False, False], False)]
)
def test_every_rank_learns_whether_any_rank_was_signalled(tmp_path, received, expected):
    mp.spawn(_agree, args=(received, tmp_path), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"rank{r}").read_text()) for r in (0, 1)] == [expected, expected]


def test_lightning_still_has_the_replaced_seams():
    """A Lightning upgrade that renames them would silently bring the per-step device sync back."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert callable(getattr(trainer.fit_loop.epoch_loop, _LOOP_BROADCAST, None))
    assert callable(getattr(trainer._signal_connector, _SIGNAL_HANDLER, None))


SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import lightning as L, torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from maestro.training.signals import HostSideStopSignal

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            loop = self.trainer.fit_loop.epoch_loop
            self.replaced = "_broadcast_sigterm_tensor" in vars(loop)
            if index == 3 and self.global_rank == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGTERM)  # a preemption notice reaching one rank only
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(128, 4), batch_size=2)

    model = Model()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=40, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[HostSideStopSignal()],
    )
    try:
        trainer.fit(model)
        outcome = "finished"
    except SIGTERMException:
        outcome = "stopped"
    result = {"outcome": outcome, "step": trainer.global_step, "replaced": model.replaced}
    with open(os.path.join(sys.argv[1], f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(result, f)
    """
)


@pytest.mark.parametrize("signalled_rank", [0, 1])
def test_a_sigterm_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, signalled_rank):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    # --standalone: a localhost rendezvous on a free port torchrun picks itself
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(script), str(tmp_path), str(signalled_rank)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    results = [
        json.loads((tmp_path / f"rank{r}.json").read_text())
        for r in (0, 1)
        if (tmp_path / f"rank{r}.json").exists()
    ]
    assert len(results) == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(r["replaced"] for r in results)  # the host-side broadcast ran, not Lightning's
    assert results[0]["outcome"] == results[1]["outcome"] == "stopped"
    assert results[0]["step"] == results[1]["step"] == 4  # both left before the batch after the signal


def test_single_process_runs_keep_lightnings_handling():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    callback = HostSideStopSignal()
    callback.setup(trainer, L.LightningModule(), "fit")
    assert callback.group is None and _LOOP_BROADCAST not in vars(trainer.fit_loop.epoch_loop)
