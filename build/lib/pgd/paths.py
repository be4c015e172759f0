"""Where things live. Every relative path in a config is resolved under the platform home:
``$PGD_HOME`` when set, else the project directory. ``ray job submit`` runs the entrypoint in
a temporary copy of the working dir, so nothing may depend on the current directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    return Path(os.environ.get("PGD_HOME") or PROJECT_ROOT).expanduser().resolve()


def resolve(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> Path | None:
    """Absolute path: ``path`` itself when absolute, else under ``base`` (default: home)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (Path(base) if base is not None else home()) / p
