from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from maestro.config import from_dict, load_config, nested, to_dict
from maestro.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")


@dataclass(frozen=True)
class Run:
    name: str = "run"
    mode: Literal["group", "mod"] = "group"
    steps: int = 10
    modalities: tuple[str, ...] = ("aerial",)
    optim: Optim = field(default_factory=Optim)
    out: Path | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("steps must be >= 1")


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\noptim:\n  lr: 0.1\nmodalities: [aerial, dem]\n")
    cfg = load_config(Run, path, ["optim.lr=3e-5", "steps=4", "out=/tmp/x"])
    assert cfg.name == "a" and cfg.optim.lr == 3e-5 and cfg.steps == 4
    assert cfg.modalities == ("aerial", "dem") and cfg.out == Path("/tmp/x")
    assert from_dict(Run, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stesp": 3}, "unknown key(s) ['stesp']"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
        ({"mode": "grup"}, "mode: 'grup' is not one of"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: expected 2 items"),
    ],
)
def test_bad_configs_fail_with_the_key_path(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Run, data)
    assert message in str(info.value)


def test_a_nested_error_names_its_key_path_once():
    with pytest.raises(ConfigError) as info:
        load_config(Run, None, ["optim.lr=-1"])
    assert str(info.value) == "optim: lr must be > 0"


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Run, None, ["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "nope.yaml")


def test_a_nested_section_is_taken_as_itself_or_built_from_a_mapping():
    optim = Optim(lr=0.5)
    assert nested(Optim, optim, "optim") is optim
    assert nested(Optim, {"lr": 0.2}, "optim") == Optim(lr=0.2)
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['lrr'\]"):
        nested(Optim, {"lrr": 0.2}, "optim")
    with pytest.raises(ConfigError, match="optim: expected a mapping, got int"):
        nested(Optim, 3, "optim")
