"""Checks a plan runs before anything expensive starts: names, paths, checkpoints, the MLflow
tracking URI. Each raises a ConfigError naming the value, where it came from and the fix."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pgd.errors import ConfigError
from pgd.paths import check_local_file  # noqa: F401  (re-exported: one of the plan's checks)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: tracking-URI schemes MLflow 3 accepts and this platform passes through unchecked
DB_SCHEMES = ("postgresql", "mysql", "mssql", "databricks")


def check_sweep_name(name: str, home: Path) -> Path:
    """The sweep's folder ``<home>/sweeps/<name>``; the name must be one path component."""
    if not NAME_RE.fullmatch(name or "") or ".." in name:
        raise ConfigError(f"sweep name {name!r} must be letters, digits, '_', '-', '.' (no '/' or '..'): "
                          "it names a folder under $PGD_HOME/sweeps")
    root = (home / "sweeps").resolve()
    out = (root / name).resolve()
    if root not in out.parents:
        raise ConfigError(f"sweep name {name!r} would put the sweep outside {root}")
    return out


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the SQLite file ``<home>/mlflow.db``."""
    import os

    from pgd.paths import home

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def check_tracking_uri(uri: str, timeout: float = 5.0) -> str:
    """A tracking URI MLflow 3 can use: ``sqlite:///<path>`` (its folder must exist or be
    creatable), an ``http(s)://`` server that answers ``/health`` within ``timeout`` seconds,
    or a database URI."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise ConfigError(f"tracking URI {uri!r} must look like sqlite:////absolute/path/mlflow.db")
        path = Path(uri[len("sqlite:///"):])
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"tracking URI {uri!r}: no folder to create {path.parent} in")
        return uri
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise ConfigError(f"tracking URI {uri!r} has no host; e.g. http://mlflow.internal:5000")
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - the user's own server
                if r.status != 200:
                    raise ConfigError(f"MLflow tracking server {uri} answered {r.status} on /health")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"MLflow tracking server {uri} did not answer within {timeout:g} s ({reason}); start it "
                "(mlflow server ...) or fix --tracking-uri / MLFLOW_TRACKING_URI") from None
        return uri
    if scheme in DB_SCHEMES:
        return uri
    if scheme in ("", "file"):
        raise ConfigError(f"tracking URI {uri!r}: MLflow 3 has no file store; use sqlite:////path/mlflow.db "
                          "or an http(s):// tracking server")
    raise ConfigError(f"tracking URI {uri!r} has an unknown scheme {parsed.scheme!r}; use sqlite:///, "
                      f"http(s)://, or one of {', '.join(DB_SCHEMES)}")
