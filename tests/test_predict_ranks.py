"""Ranks of ``predict`` from torchrun's or srun's environment; a plain run is rank 0 of 1."""

from __future__ import annotations

import os

import pytest

from maestro.errors import ConfigError
from predict.ranks import Ranks, from_env, launch_id


def test_a_plain_run_is_rank_0_of_1() -> None:
    assert from_env({}) == Ranks(0, 1, 0, 1)
    assert from_env({}).device == "cuda:0" and not from_env({}).launched


def test_torchrun_variables() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    ranks = from_env(env)
    assert ranks == Ranks(5, 8, 1, 4) and ranks.device == "cuda:1" and ranks.launched


def test_srun_variables_and_their_per_node_counts() -> None:
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2(x2)"}
    assert from_env(env) == Ranks(3, 4, 1, 2)
    # torchrun started by srun: torchrun's own ranks count
    assert from_env({**env, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == Ranks(0, 2, 0, 2)


def test_inconsistent_ranks_are_refused() -> None:
    with pytest.raises(ConfigError, match="rank 2"):
        from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="RANK"):
        from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_launch_id_is_shared_by_the_ranks_of_one_launch_only() -> None:
    one = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "n1", "MASTER_PORT": "29500", "RANK": "0"}
    assert launch_id(one) == launch_id({**one, "RANK": "1", "LOCAL_RANK": "1"})
    assert launch_id(one) != launch_id({**one, "TORCHELASTIC_RUN_ID": "def"})
    assert launch_id({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}) != launch_id(
        {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "1"}
    )
    assert launch_id({}) is None and launch_id({"TORCHELASTIC_RUN_ID": "none"}) is None


def test_torchrun_without_a_run_id_is_told_apart_by_its_agent_on_one_node() -> None:
    static = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    one_node = {**static, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    me, parent = os.getpid(), os.getppid()
    assert launch_id(one_node, agent=me) == launch_id({**one_node, "RANK": "1"}, agent=me)
    assert launch_id(one_node, agent=me) != launch_id(one_node, agent=parent)  # another launch
    # several nodes: no common parent; the ranks agree on the launcher's variables alone
    nodes = {**static, "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    assert (
        launch_id(nodes, agent=me)
        == launch_id(nodes, agent=parent)
        == "MASTER_ADDR=127.0.0.1;MASTER_PORT=29500"
    )
