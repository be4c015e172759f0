"""Strict YAML loading and validation errors a person can act on.

- :func:`load_yaml` refuses duplicate keys (PyYAML silently keeps the last one, so a second
  ``grid:`` block would replace the first) and names the file and the lines.
- :func:`validate` builds a pydantic model from plain data and turns a ``ValidationError``
  into one :class:`~pgd.errors.ConfigError` naming the source, every bad key path, the bad
  value and what is allowed (valid choices, valid keys, the range).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pgd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: union tags pydantic inserts into error locations (discriminated unions); not key names
_TAGS: set[str] = set()


def register_union_tags(*tags: str) -> None:
    """Names that appear in pydantic error locations as union tags, dropped from key paths."""
    _TAGS.update(tags)


# ----------------------------------------------------------------------------- YAML
class _StrictLoader(yaml.SafeLoader):
    source = "<yaml>"


def _construct_mapping(loader: _StrictLoader, node, deep=False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{loader.source}: duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                "YAML would silently keep only the last one: merge the two into one mapping"
            )
        seen[key] = line
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "<yaml>"):
    """``yaml.safe_load`` that refuses duplicate keys; errors name ``source``."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, *, what: str = "config file") -> tuple[Any, str]:
    """(data, text) of a YAML file; a missing file or bad YAML is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    text = p.read_text()
    return parse_yaml(text, str(path)), text


# ----------------------------------------------------------------------------- errors
def key_path(loc, root: str = "") -> str:
    """``('schedule', 'lr_steps', 0)`` -> ``schedule.lr_steps[0]`` (union tags dropped)."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS or "[" in str(part) or part.startswith("function-"):
            continue  # a union member's tag, not a key
        else:
            out += f".{part}" if out else str(part)
    return out or root or "(top level)"


def _describe(err: dict, root: str) -> str:
    path = key_path(err["loc"], root)
    kind = err["type"]
    msg = err["msg"]
    value = err.get("input")
    if kind in ("unknown_key", "value_error") and msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "unknown_key":
        return f"{path}: {msg}"
    if kind == "missing":
        return f"{path} is required"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = ", ".join(s.strip().strip("'") for s in expected.replace(" or ", ", ").split(","))
        return f"{path}={value!r} is not one of the valid choices: {choices}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{path}: {msg}"
    if isinstance(value, dict):
        return f"{path}: {msg}"
    return f"{path}={value!r}: {msg}"


def format_errors(exc: ValidationError, source: str, root: str = "") -> str:
    lines, seen = [], set()
    for err in exc.errors(include_url=False):
        line = _describe(err, root)
        if line not in seen:
            seen.add(line)
            lines.append(line)
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{source}: {len(lines)} problems:\n" + "\n".join(f"  - {ln}" for ln in lines)


def validate(model: type[M], data: Any, source: str, root: str = "") -> M:
    """``model.model_validate(data)``; a ValidationError becomes a ConfigError naming
    ``source`` (a file, ``--set``, ...), the key paths under ``root``, values and fixes."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source, root)) from None


def set_dotted(d: dict, dotted: str, value, source: str = "override") -> None:
    """``set_dotted(cfg, "schedule.epochs", 3)`` on plain data (before validation)."""
    keys = dotted.split(".")
    cur = d
    for i, k in enumerate(keys[:-1]):
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: cannot set {dotted}: {'.'.join(keys[:i + 1])} is not a mapping")
        cur = nxt
    cur[keys[-1]] = value


def merge(base: dict, override: dict) -> dict:
    """Recursive merge of plain data (override wins); lists and scalars are replaced."""
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
