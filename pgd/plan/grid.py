"""Grid expansion: a grid space's axes -> its grid points (overrides + seed), with every
condition checked against the axes it names.

Rules (docs/architecture.md, "Sweep plan"):
- each grid (a list of grids is their union) is the cartesian product of its axes;
- an axis with ``when: {key: [values]}`` applies only where the named axes took one of those
  values; ``when`` may name only axes written *before* it in the same grid, with values among
  that axis' values (a typo is an error, not a silently dropped axis);
- a plain-student point drops its ``distill.*`` axes (a student has no distill section);
- ``exclude`` entries drop the points matching every key of the entry; each entry's keys must
  be axes, its values among the axis' values, and it must drop at least one point;
- duplicates are removed (first occurrence kept), then every point is repeated per seed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from pgd.config.names import STUDENT, SWEEP_METHODS, VIRTUAL_KEYS
from pgd.config.space import SpaceSpec
from pgd.errors import ConfigError


@dataclass(frozen=True)
class GridPoint:
    overrides: dict  # axis key -> value, in axis order
    seed: int


def base_value(base: dict, key: str):
    """The value a sweep key has in the base run (virtual keys included)."""
    if key == "method":
        return (base.get("distill") or {}).get("method", "pgd") if base.get("distill") else STUDENT
    if key == "detector":
        return str(base.get("model", "atss_tiny")).rsplit("_", 1)[0]
    cur = base
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def point_method(overrides: dict, base: dict) -> str:
    """``student`` or the KD method of a point."""
    return overrides.get("method", base_value(base, "method"))


def _check_conditions(spec: SpaceSpec) -> None:
    for g, grid in enumerate(spec.grid):
        where = f"grid[{g}]" if len(spec.grid) > 1 else "grid"
        seen: dict[str, list] = {}
        for key, axis in grid.items():
            for wk, allowed in axis.when.items():
                if wk not in seen:
                    later = " (it comes later: put it before this axis)" if wk in grid else ""
                    raise ConfigError(
                        f"{where}.{key}.when names {wk!r}, which is not an earlier axis of this grid{later}; "
                        f"axes before it: {', '.join(seen) or 'none'}")
                bad = [v for v in allowed if v not in seen[wk]]
                if bad:
                    raise ConfigError(
                        f"{where}.{key}.when: {wk} value(s) {bad} are not among {where}.{wk}'s values "
                        f"{seen[wk]}; the axis would silently never apply")
            seen[key] = list(axis.values)
    axes: dict[str, set] = {}
    for grid in spec.grid:
        for key, axis in grid.items():
            axes.setdefault(key, set()).update(json.dumps(v, sort_keys=True) for v in axis.values)
    for j, entry in enumerate(spec.exclude):
        for key, allowed in entry.items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if key not in axes:
                raise ConfigError(f"exclude[{j}] names {key!r}, which is no grid axis; axes: {', '.join(axes)}")
            bad = [v for v in allowed if json.dumps(v, sort_keys=True) not in axes[key]]
            if bad:
                raise ConfigError(f"exclude[{j}].{key}: value(s) {bad} are not among that axis' values")


def _active(grid: dict, combo) -> dict:
    """The axes of one combination that apply, in axis order (conditions see applied axes)."""
    kept: dict = {}
    for (key, axis), value in zip(grid.items(), combo):
        if all(wk in kept and kept[wk] in allowed for wk, allowed in axis.when.items()):
            kept[key] = value
    return kept


def _matches(entry: dict, values: dict, base: dict) -> bool:
    for k, allowed in entry.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if values.get(k, base_value(base, k)) not in allowed:
            return False
    return True


def expand_grid(spec: SpaceSpec) -> list[GridPoint]:
    """Every grid point of a grid space, times its seeds (see the module doc for the rules)."""
    _check_conditions(spec)
    points: list[dict] = []
    seen: set[str] = set()
    applied = {key: False for grid in spec.grid for key in grid}
    used = [0] * len(spec.exclude)
    for grid in spec.grid or [{}]:
        for combo in itertools.product(*[a.values for a in grid.values()]) if grid else [()]:
            kept = _active(grid, combo)
            if point_method(kept, spec.base) == STUDENT:
                kept = {k: v for k, v in kept.items() if not k.startswith("distill.")}
            for k in kept:
                applied[k] = True
            hits = [j for j, e in enumerate(spec.exclude) if _matches(e, kept, spec.base)]
            for j in hits:
                used[j] += 1
            if hits:
                continue
            sig = json.dumps(kept, sort_keys=True, default=str)
            if sig not in seen:
                seen.add(sig)
                points.append(kept)
    never = [k for k, ok in applied.items() if not ok]
    if never:
        raise ConfigError(f"grid axis {never[0]!r} applies to no grid point (its when never holds)")
    for j, n in enumerate(used):
        if n == 0:
            raise ConfigError(f"exclude[{j}] {spec.exclude[j]} matches no grid point; fix or remove it")
    if not points:
        raise ConfigError("the grid has no point left after exclude")
    for p in points:
        m = point_method(p, spec.base)
        if m not in SWEEP_METHODS:
            raise ConfigError(f"unknown method {m!r}; valid methods are: {', '.join(SWEEP_METHODS)}")
    return [GridPoint(dict(p), int(s)) for p in points for s in spec.seeds]


def point_name(overrides: dict, seed: int, base: dict) -> str:
    """A readable trial name: ``pgd strategy=pgw seed=1``, ``fcos fgd seed=0``."""
    parts = []
    if "detector" in overrides:
        parts.append(str(overrides["detector"]))
    parts.append(str(point_method(overrides, base)))
    for k, v in overrides.items():
        if k not in VIRTUAL_KEYS:
            parts.append(f"{k.rsplit('.', 1)[-1]}={v}")
    parts.append(f"seed={seed}")
    return " ".join(parts)
