"""Typed, validated configuration sections built from plain dicts (YAML data).

A section is a dataclass; :func:`from_dict` rejects unknown keys (listing the valid ones) and
wrong types, so a typo in a space file or a CLI override fails at once with its path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from pgd.errors import ConfigError

T = TypeVar("T")


def _check_type(path: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names what is wrong
            return _check_type(path, value, options[0])
        errors = []
        for a in options:
            try:
                return _check_type(path, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}={value!r} has the wrong type; expected {tp} ({'; '.join(errors)})")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_check_type(f"{path}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {path or cls.__name__}; "
            f"valid keys are: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_type(f"{path}.{name}" if path else name, value, hints[name])
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path or cls.__name__)
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins); lists and scalars are replaced."""
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def set_dotted(d: dict, dotted: str, value) -> None:
    """``set_dotted(cfg, "schedule.epochs", 3)``."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a mapping")
    cur[keys[-1]] = value
