"""Reference checkpoints are read without running anything they contain."""

from __future__ import annotations

import builtins
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from reference_fixture import CHECKPOINT, require_fixture
from torch.serialization import get_safe_globals

from maestro.errors import ConfigError
from maestro.reference.convert import import_reference
from maestro.reference.unpickle import StandIn, read_reference_checkpoint


class RunsCommand:
    """Unpickling this calls ``subprocess.call(argv)``, as a hostile checkpoint would."""

    def __init__(self, argv: list[str]):
        self.argv = argv

    def __reduce__(self):
        return subprocess.call, (self.argv,)


class ExecsCode:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


class CallsOsSystem:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def lightning_like(payload: object) -> dict:
    """A small Lightning-like checkpoint dict with ``payload`` in its hyper-parameters."""
    state = OrderedDict({"model.patch_embed.aerial.patchify_bands.0.conv.weight": torch.zeros(8, 4, 16, 16)})
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.5.1",
        "state_dict": state,
        "hparams_name": "kwargs",
        "hyper_parameters": {"model_size": "tiny", "payload": payload},
    }


@pytest.mark.parametrize(
    "payload",
    [
        lambda marker: RunsCommand(["touch", str(marker)]),
        lambda marker: ExecsCode(f"open({str(marker)!r}, 'w').close()"),
    ],
    ids=["subprocess.call", "builtins.exec"],
)
def test_a_reduce_payload_is_neutralised_and_never_runs(tmp_path, payload, caplog):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(lightning_like(payload(marker)), path)
    before = set(map(str, get_safe_globals()))
    with caplog.at_level("WARNING"):
        checkpoint = read_reference_checkpoint(path)
    assert not marker.exists()
    payload_value = checkpoint.hyper_parameters["payload"]
    assert payload_value["__class__"].rsplit(".", 1)[1] in ("call", "exec")  # its pickled global
    assert checkpoint.neutralised == [payload_value["__class__"]]
    assert "inert stand-ins" in caplog.text
    assert set(map(str, get_safe_globals())) == before  # the stand-ins were registered only while loading
    assert list(checkpoint.state) == ["model.patch_embed.aerial.patchify_bands.0.conv.weight"]


def test_a_blocked_module_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(lightning_like(CallsOsSystem(f"touch {marker}")), path)
    with pytest.raises(ConfigError, match="refused by the restricted unpickler"):
        read_reference_checkpoint(path)
    with pytest.raises(ConfigError):
        import_reference(path, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ConfigError, match="not a torch zip checkpoint"):
        read_reference_checkpoint(path)


def test_the_fixture_loads_without_the_reference_package():
    require_fixture()

    def reference_modules() -> set[str]:
        return {name for name in sys.modules if name == "maestro.conf" or name.startswith("maestro.conf.")}

    before = reference_modules()
    checkpoint = read_reference_checkpoint(CHECKPOINT)
    assert reference_modules() == before == set()
    assert checkpoint.neutralised == []  # MaskConfig belongs to the reference code: expected
    mask = checkpoint.hyper_parameters["mask"]
    assert mask == {
        "__class__": "maestro.conf.mask.MaskConfig",
        "mask_ratio": 0.75,
        "mask_scale": 0.0,
        "mask_mod": 0.25,
        "mask_bands": None,
        "mask_dates": 0.25,
        "mask_loc": 0.25,
    }
    assert checkpoint.hyper_parameters["model_size"] == "tiny"
    assert checkpoint.metadata == {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6"}
    assert len(checkpoint.state) == 424
    assert all(isinstance(value, torch.Tensor) for value in checkpoint.state.values())


def test_stand_ins_only_record_what_they_are_given():
    value = StandIn(["rm", "-rf", "/"])
    value.__setstate__({"a": 1})
    assert value.args == (["rm", "-rf", "/"],) and value.fields() == {"a": 1}
