"""The real `pretrain` command launched the ways a cluster launches it, on CPU with gloo.

torchrun on one node with two processes, torchrun as two "nodes" (two launcher processes meeting
at a localhost rendezvous), and srun's environment (SLURM_* variables) faked for two tasks: each
launch must train, agree across ranks and write one run. The validation loss gathered over two
ranks equals the one-process value on the same shards.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from multiprocess_helpers import free_port
from test_pretrain import TINY_MODEL

pytestmark = pytest.mark.slow


def _config(shards: Path, out: Path, path: Path) -> Path:
    config = {
        "data": {
            "train": str(shards),
            "val": str(shards),
            "batch_size": 2,
            "num_workers": 0,
            "batches_per_epoch": 2,
            "shuffle_buffer": 4,
        },
        "model": TINY_MODEL,
        "optim": {"base_lr": 1e-3},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 1,
            "checkpoint_every_n_steps": 100,
            "reconstruction_every_n_steps": 0,
            "ema_decay": 0.9,
            "accelerator": "cpu",
            "log_every_n_steps": 1,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _free_port_between(low: int, high: int) -> int:
    for port in range(low + os.getpid() % 1000, high):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))
    }
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _wait(processes: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    """Wait for every process; on a timeout kill their process groups so nothing hangs CI."""
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=timeout)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("launch timed out")
    for process, out in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out[-3000:]
    return outputs


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _pretrain(config: Path, *flags: str) -> list[str]:
    return ["-m", "pretrain.cli", "--config", str(config), "--accelerator", "cpu", *flags]


def _torchrun(nnodes: int, nproc: int, port: int, node_rank: int = 0) -> list[str]:
    """A torchrun launcher meeting the others at a localhost rendezvous."""
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes)),
        *("--nproc-per-node", str(nproc), "--node-rank", str(node_rank)),
        *("--master-addr", "127.0.0.1", "--master-port", str(port)),
    ]


def _one_run(out: Path) -> None:
    """Rank 0 alone wrote the run: one config, checkpoints of the 2 global steps."""
    assert (out / "config.yaml").is_file()
    checkpoints = [torch.load(path, weights_only=True) for path in (out / "checkpoints").glob("*.ckpt")]
    assert max(c["global_step"] for c in checkpoints) == 2 and all("ema_state_dict" in c for c in checkpoints)


def test_torchrun_two_processes_on_one_node(toy_shards, tmp_path):
    config = _config(toy_shards, tmp_path / "run", tmp_path / "config.yaml")
    torchrun = _torchrun(nnodes=1, nproc=2, port=free_port())
    command = torchrun + _pretrain(config, "--devices", "2", "--strategy", "ddp")
    outputs = _wait([_spawn(command, _env())])
    _one_run(tmp_path / "run")
    assert "global batch 4" in outputs[0]
    # each logged window carries the slowest-fed rank's input wait, reduced over both ranks
    with next((tmp_path / "run" / "csv").glob("version_*/metrics.csv")).open() as f:
        waits = [
            row["perf/input_wait_fraction_max"]
            for row in csv.DictReader(f)
            if row.get("perf/samples_per_sec")
        ]
    assert waits and all(0.0 <= float(w) <= 1.0 for w in waits)


def test_torchrun_as_two_nodes_with_a_localhost_rendezvous(toy_shards, tmp_path):
    config = _config(toy_shards, tmp_path / "run", tmp_path / "config.yaml")
    port = free_port()
    launchers = [
        _spawn(
            [
                *_torchrun(nnodes=2, nproc=1, port=port, node_rank=rank),
                *_pretrain(config, "--devices", "1", "--num-nodes", "2", "--strategy", "ddp"),
            ],
            _env(),
        )
        for rank in (0, 1)
    ]
    outputs = _wait(launchers)
    _one_run(tmp_path / "run")
    assert "global batch 4" in "".join(outputs)  # 2 samples per rank x 2 ranks: both nodes joined


@pytest.mark.parametrize(
    ("split", "layout"),
    [("train", "16 patches in 4 shards, 2 per rank"), ("val", "4 patches in 1 shard: rank 1 has none")],
)
def test_validation_loss_over_two_ranks_equals_one_process(toy_shards, tmp_path, split, layout):
    """Same weights and shards, different batch sizes and rank counts, one loss: each sample's
    mask follows its patch id, errors are pooled over every pixel of every rank, and a rank
    without validation data neither hangs nor skews the result."""
    worker = str(Path(__file__).parent / "pretrain_validate_worker.py")
    config = _config(toy_shards, tmp_path / "unused", tmp_path / "config.yaml")
    common = [f"data.val_split={split}", "trainer.accelerator=cpu"]
    one = [sys.executable, worker, str(config), f"trainer.output_dir={tmp_path / 'one'}", "data.batch_size=5"]
    _wait([_spawn(one + common, _env())])
    two = _torchrun(nnodes=1, nproc=2, port=free_port()) + [
        *(worker, str(config), f"trainer.output_dir={tmp_path / 'two'}", "data.batch_size=3"),
        *common,
        "trainer.devices=2",
        "trainer.strategy=ddp",
    ]
    _wait([_spawn(two, _env())], timeout=120)
    single = json.loads((tmp_path / "one" / "val.json").read_text())
    ranks = json.loads((tmp_path / "two" / "val.json").read_text())
    assert set(single) == set(ranks) and "val/loss" in single, layout
    for name, value in single.items():
        assert ranks[name] == pytest.approx(value, rel=1e-5), (name, layout)


def test_srun_environment_is_what_lightning_reads(toy_shards, tmp_path):
    """Two tasks as `srun --ntasks-per-node 2 pretrain ...` starts them: Lightning's SLURM
    environment derives ranks from SLURM_PROCID/LOCALID and the address from SLURM_NODELIST."""
    config = _config(toy_shards, tmp_path / "run", tmp_path / "config.yaml")
    job = str(_free_port_between(15000, 25000) - 15000)  # Lightning's port: 15000 + job id's last 4 digits
    tasks = []
    for rank in (0, 1):
        env = _env(
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            SLURM_NNODES="1",
            SLURM_NODELIST="127.0.0.1",
            SLURM_JOB_ID=job,
            SLURM_JOB_NAME="pretrain",
            SLURM_CPUS_PER_TASK="1",
        )
        tasks.append(_spawn([sys.executable, *_pretrain(config, "--devices", "2", "--strategy", "ddp")], env))
    outputs = _wait(tasks)
    _one_run(tmp_path / "run")
    assert "global batch 4" in "".join(outputs)  # both tasks formed one world of 2 ranks


def test_finetune_under_torchrun_scores_the_whole_split_once(finetune_raw, tmp_path):
    """Two DDP ranks fine-tune and test: the test confusion matrix is summed over both ranks, so
    it counts every pixel of the split exactly once (as many as one process counts)."""

    def finetune(name: str, launcher: list[str], *flags: str) -> dict:
        raw = finetune_raw(tmp_path / name)
        raw["trainer"].update(max_epochs=1)
        raw["data"].update(batches_per_epoch=2)
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw))
        command = [*launcher, "-m", "finetune.cli", "--config", str(config), "--task", "lc"]
        _wait([_spawn([*command, "--accelerator", "cpu", *flags], _env())])
        return json.loads((tmp_path / name / "test" / "metrics.json").read_text())

    torchrun = _torchrun(nnodes=1, nproc=2, port=free_port())
    metrics = finetune("ddp", torchrun, "--devices", "2", "--strategy", "ddp")
    reference = finetune("single", [sys.executable], "--devices", "1")
    assert metrics["num_pixels"] == reference["num_pixels"] > 0
