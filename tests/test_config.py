import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from finetune.config import FinetuneConfig
from maestro.config import from_dict, load_config, nested, to_dict
from maestro.errors import ConfigError
from maestro.models.baseline.config import SwinUTAEConfig
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.segmenter_config import SegmenterConfig
from pretrain.config import PretrainConfig


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


@dataclass(frozen=True)
class Stage:
    optim: Optim = field(default_factory=lambda: Optim(lr=0.5, betas=(0.8, 0.9)))


def test_a_partial_section_keeps_the_defaults_of_the_field_it_fills():
    assert load_config(Stage, None, ["optim.lr=0.2"]).optim == Optim(lr=0.2, betas=(0.8, 0.9))
    assert from_dict(Stage, {"optim": {"betas": [0.7, 0.7]}}).optim == Optim(lr=0.5, betas=(0.7, 0.7))
    assert from_dict(Stage, {"optim": None}) == Stage()


# Every config a user loads from YAML or a model folder: (class, the keys it requires).
TOP_LEVEL_CONFIGS = [
    (PretrainConfig, {"data": {"train": "shards"}}),
    (FinetuneConfig, {}),
    (MAEConfig, {}),
    (EncoderConfig, {}),
    (SegmenterConfig, {"encoder": {}, "num_classes": 3}),
    (SwinUTAEConfig, {"encoder": {}, "tasks": {"lc": 3}}),
]


def _sections(config: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, section) of every nested dataclass section, depth first, the config itself first."""
    yield path, config
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            yield from _sections(value, (*path, spec.name))


def _changed(value: Any) -> Any:
    """Another plausible value of a scalar key (the same value where there is no obvious other)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    return value


def _set(raw: dict, path: tuple[str, ...], key: str, value: Any) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value
    return raw


def _replace(config: Any, path: tuple[str, ...], key: str, value: Any) -> Any:
    if not path:
        return dataclasses.replace(config, **{key: value})
    section = getattr(config, path[0])
    return dataclasses.replace(config, **{path[0]: _replace(section, path[1:], key, value)})


@pytest.mark.parametrize(("cls", "required"), TOP_LEVEL_CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
def test_overriding_one_key_of_any_section_keeps_every_other_default_of_the_stage(cls, required):
    defaults = from_dict(cls, required)
    checked = 0
    for path, section in _sections(defaults):
        for spec in dataclasses.fields(section):
            value = getattr(section, spec.name)
            if not spec.init or dataclasses.is_dataclass(value):
                continue
            for new in (_changed(value), value):
                try:
                    loaded = from_dict(cls, _set(required, path, spec.name, to_dict(new)))
                except ConfigError:  # not a valid value of this key: the unchanged value still checks
                    continue
                where = ".".join((*path, spec.name))
                assert loaded == _replace(defaults, path, spec.name, new), where
                checked += 1
                break
    assert checked > 10
