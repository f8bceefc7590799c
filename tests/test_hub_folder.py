"""Model folders on disk: ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import os
import stat

import pytest
import torch

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
