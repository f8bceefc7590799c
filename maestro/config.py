"""Strict YAML -> dataclass configs with dotted command-line overrides.

A typo in a config must fail when the run starts, not at epoch 3: unknown keys, wrong types and
invalid values raise :class:`~maestro.errors.ConfigError` naming the offending key path.
Dataclasses validate themselves in ``__post_init__`` and raise ConfigError without their own key
path; the loader prefixes the path once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from maestro.errors import ConfigError

T = TypeVar("T")


class ConfigMixin:
    """``from_dict`` / ``to_dict`` / ``replace`` for frozen config dataclasses: one behaviour for
    every config of the suite (strict loading, plain YAML/JSON form, validated copies)."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any] | None) -> T:
        """Build from a plain mapping (YAML, ``config.json``); unknown keys raise a ConfigError."""
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serialisable form that :meth:`from_dict` reads back."""
        return to_dict(self)

    def replace(self: T, **changes: Any) -> T:
        """A validated copy with some fields changed (configs are never mutated)."""
        return dataclasses.replace(self, **changes)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: the safe
    loader keeps the last one silently, so a pasted duplicate would win without a word."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(
                f"key {key!r} is given twice in one mapping (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document of ``path``; a missing file, invalid YAML or a key given twice is a
    ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        with path.open() as handle:
            return yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as error:
        raise ConfigError(f"{what} {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read ``path`` (YAML), apply ``key.sub=value`` overrides, build and validate ``cls``."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = load_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        raw = loaded or {}
    for override in overrides:
        apply_override(raw, override)
    return from_dict(cls, raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``3``, ``[a, b]``, ``null``)."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key.sub=value")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "", base: T | None = None) -> T:
    """Build dataclass ``cls`` from a mapping, recursively and strictly.

    A partial mapping changes only the keys it names: the others keep ``base`` (when given) or the
    defaults of the field it fills in its parent. A stage whose section default differs from the
    section class's own defaults (fine-tuning's ``optim``) thus keeps its recipe when one key of
    that section is overridden.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {name: getattr(base, name) for name in fields if name not in data} if base is not None else {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        kwargs[name] = _convert(hints[name], value, _join(where, name), default)
    try:
        obj = cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None
    except (ValueError, ConfigError) as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None
    return obj


def nested(cls: type[T], value: Any, where: str) -> T:
    """A nested section given as ``cls`` itself or as a plain mapping (a config built in Python
    rather than by the loader); anything else is a ConfigError naming ``where``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return from_dict(cls, value, where=where)
    raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain YAML-serialisable structures."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _field_default(spec: dataclasses.Field) -> Any:
    """The value a field takes when its key is absent (None when it has no default)."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _join(where: str, name: str | int) -> str:
    return f"{where}.{name}" if where else str(name)


def _convert(hint: Any, value: Any, where: str, default: Any = None) -> Any:
    """``value`` as type ``hint``; a mapping for a dataclass is merged over ``default`` when that
    is an instance of it (the section's default in its parent)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where, default)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_dict(hint, value, where, default if isinstance(default, hint) else None)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, _join(where, i)) for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        else:
            item = args[0] if args else Any
        items = [_convert(item, v, _join(where, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {
            _convert(key_type, k, where): _convert(value_type, v, _join(where, k)) for k, v in value.items()
        }
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value
