"""Session fixtures: a small toy FLAIR-HUB tree and its shards, built once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maestro.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy") / "flairhub"
    write_toy_dataset(root, num_patches=24, seed=0)
    return root


@pytest.fixture(scope="session")
def toy_shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shards.cli import main

    out = tmp_path_factory.mktemp("toy_shards") / "shards"
    code = main(["build", "--root", str(toy_root), "--split", "train", "val", "--out", str(out),
                 "--max-count", "4", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and the CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
