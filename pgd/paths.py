"""Where things live. Every relative path in a config is resolved under the platform home:
``$PGD_HOME`` when set, else the project directory. ``ray job submit`` runs the entrypoint in
a temporary copy of the working dir, so nothing may depend on the current directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


#: set by Ray in the driver of a ``ray job submit`` job (the job's runtime env as JSON)
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: the home of a submitted job that sets no PGD_HOME: outside the job's temporary working
#: dir (which Ray deletes), on the node the driver runs on
JOB_DEFAULT_HOME = "~/pgd-home"


def home() -> Path:
    """``$PGD_HOME``; else, inside a submitted Ray job, ``~/pgd-home`` (never the job's
    temporary copy of the working dir); else the project folder."""
    if os.environ.get("PGD_HOME"):
        return Path(os.environ["PGD_HOME"]).expanduser().resolve()
    if RAY_JOB_ENV in os.environ:
        return Path(JOB_DEFAULT_HOME).expanduser().resolve()
    return PROJECT_ROOT


def resolve(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> Path | None:
    """Absolute path: ``path`` itself when absolute, else under ``base`` (default: home)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (Path(base) if base is not None else home()) / p


#: prefixes of paths that would have to be downloaded (never done at run time)
DOWNLOAD_PREFIXES = ("http://", "https://", "s3://", "gs://", "torchvision://", "open-mmlab://",
                     "openmmlab://", "modelzoo://", "mmcls://", "pavi://")


def check_local_file(path: str | os.PathLike | None, what: str) -> Path | None:
    """A local file the run reads (weights, checkpoints): never a URL, and it must exist."""
    from pgd.errors import ConfigError

    if path is None:
        return None
    if str(path).startswith(DOWNLOAD_PREFIXES):
        raise ConfigError(f"{what} {str(path)!r} would be downloaded, and this platform never downloads "
                          "weights at run time; download it yourself and give its local path")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist" + (" (it is a folder)" if p.is_dir() else ""))
    return p
