"""Errors the platform raises for bad input: each names the offending value and the fix."""

from __future__ import annotations


class PGDError(Exception):
    """Base class of the platform's own errors."""


class ConfigError(PGDError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class AnnotationError(PGDError, ValueError):
    """A dataset's annotations or images are malformed.

    ``problems`` lists every offending entry as ``(file, image_id, reason)``.
    """

    def __init__(self, message: str, problems: list[tuple[str, object, str]] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            lines = [f"  - {f} | image {i} | {r}" for f, i, r in self.problems[:200]]
            if len(self.problems) > 200:
                lines.append(f"  ... and {len(self.problems) - 200} more")
            message = message + "\n" + "\n".join(lines)
        super().__init__(message)


def unknown_name(kind: str, value: object, valid) -> ConfigError:
    """The error for a name that is not one of ``valid``, listing the valid ones."""
    valid = sorted(valid)
    return ConfigError(f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(map(str, valid))}")


def check_range(name: str, value, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Raise ConfigError naming ``name`` unless lo <= value <= hi (open ends where asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if v != v:
        raise ConfigError(f"{name} must be a number, got NaN")
    bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (
        hi is not None and (v >= hi if hi_open else v > hi)
    )
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(
            f"{name}={value!r} is out of range; it must lie in {lb}{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}{rb}"
        )
    return value
