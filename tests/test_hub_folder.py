"""Model folders on disk: ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from maestro.hub.folder import CONFIG_NAME, WEIGHTS_NAME, read_model_folder, write_model_folder


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_of_a_model_folder_gets_the_umask_mode(tmp_path, umask) -> None:
    previous = os.umask(umask)
    try:
        folder = write_model_folder(tmp_path / "model", "maestro-encoder", {"a": 1}, {"w": torch.ones(2)})
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((folder / name).stat().st_mode) for name in (CONFIG_NAME, WEIGHTS_NAME)}
    assert modes == {CONFIG_NAME: 0o666 & ~umask, WEIGHTS_NAME: 0o666 & ~umask}
    assert torch.equal(read_model_folder(folder).state["w"], torch.ones(2))


def test_the_same_weights_give_the_same_bytes(tmp_path) -> None:
    """safetensors writes its metadata in a random order; the folder is canonical all the same, so
    a model published twice is the same files (in this process and in another)."""
    state = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}
    written = set()
    for index in range(12):
        folder = write_model_folder(
            tmp_path / str(index), "maestro-segmenter", {"x": [1, 2]}, state, task={"name": "lc"}
        )
        written.add(((folder / WEIGHTS_NAME).read_bytes(), (folder / CONFIG_NAME).read_bytes()))
    code = (
        "import sys, torch; from maestro.hub.folder import write_model_folder; "
        "state = {'b': torch.arange(6.0).reshape(2, 3), 'a': torch.ones(4, dtype=torch.int64)}; "
        "write_model_folder(sys.argv[1], 'maestro-segmenter', {'x': [1, 2]}, state, task={'name': 'lc'})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other")], check=True)
    written.add(
        ((tmp_path / "other" / WEIGHTS_NAME).read_bytes(), (tmp_path / "other" / CONFIG_NAME).read_bytes())
    )
    assert len(written) == 1
    read = read_model_folder(tmp_path / "0")
    assert read.model_type == "maestro-segmenter" and torch.equal(read.state["b"], state["b"])
    with safe_open(str(tmp_path / "0" / WEIGHTS_NAME), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "model_type": "maestro-segmenter"}
