"""Shared command-line helpers of the pipelines: YAML config + dotted ``--set`` overrides."""

from __future__ import annotations

import argparse
import sys

from pgd.config.loading import load_yaml as _load
from pgd.config.loading import parse_yaml, set_dotted
from pgd.errors import PGDError


def load_yaml(path: str | None) -> dict:
    """A run-config YAML file as plain data (duplicate keys refused)."""
    if not path:
        return {}
    data, _ = _load(path)
    data = data or {}
    if not isinstance(data, dict):
        raise PGDError(f"{path} must hold a mapping at the top level")
    return data


def apply_sets(cfg: dict, sets: list[str] | None) -> dict:
    """``--set schedule.epochs=3 --set distill.alpha=0.05`` (values parsed as YAML)."""
    for item in sets or []:
        if "=" not in item:
            raise PGDError(f"--set {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        set_dotted(cfg, key.strip(), parse_yaml(value, f"--set {item}"), f"--set {item}")
    return cfg


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key by dotted path, e.g. schedule.epochs=3")


def run_main(main) -> None:
    """Run ``main()``, turning the platform's own errors into one clear line and exit 2."""
    try:
        sys.exit(main())
    except PGDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
