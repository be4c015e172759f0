"""Optuna spaces: the validated distributions, checked against the run config's own
constraints, and the define-by-run function whose suggestions become resolved trials.

Checks (at plan time, before Ray): ``when`` names an earlier parameter (file order) and
values it can take; every distribution's ends (and every choice) give a valid run on top of
the base (e.g. ``distill.k`` with ``low: 0`` fails: the run config needs k >= 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgd.config.space import SpaceSpec
from pgd.errors import ConfigError
from pgd.plan.plan import TrialFactory


def _can_take(d, value) -> bool:
    if d.type == "categorical":
        return value in d.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and d.low <= value <= d.high


def _probes(d) -> list[tuple[str, object]]:
    if d.type == "categorical":
        return [(f"choice {c!r}", c) for c in d.choices]
    return [("low", d.low), ("high", d.high)]


def _conditions(spec: SpaceSpec, key: str, seen=()) -> dict:
    """Values of earlier params that make ``key`` apply (the first allowed value of each)."""
    out: dict = {}
    for wk, allowed in spec.params[key].when.items():
        if wk in seen:
            continue
        out.update(_conditions(spec, wk, (*seen, key)))
        out[wk] = allowed[0]
    return out


def check_distributions(spec: SpaceSpec, factory: TrialFactory) -> None:
    """ConfigError naming the parameter and the value when a distribution can suggest an
    invalid run, or a ``when`` names no earlier parameter / an impossible value."""
    earlier: dict = {}
    for key, d in spec.params.items():
        for wk, allowed in d.when.items():
            if wk not in earlier:
                raise ConfigError(f"params.{key}.when names {wk!r}, which is not an earlier parameter; "
                                  f"earlier parameters: {', '.join(earlier) or 'none'}")
            bad = [v for v in allowed if not _can_take(earlier[wk], v)]
            if bad:
                raise ConfigError(f"params.{key}.when: {wk} can never take {bad} (its distribution: "
                                  f"{earlier[wk].model_dump(exclude={'when'})})")
        earlier[key] = d
    seed = int(spec.seeds[0])
    for key, d in spec.params.items():
        cond = _conditions(spec, key)
        for which, value in _probes(d):
            try:
                factory.make({**cond, key: value}, seed, "probe")
            except ConfigError as exc:
                raise ConfigError(f"params.{key}: its {which} ({value!r}) makes an invalid run: {exc}") from None


@dataclass
class OptunaSpace:
    """Define-by-run function for ``OptunaSearch``: parameters are suggested in file order,
    conditional ones only when their ``when`` holds; it returns the resolved trial
    (``{"trial": TrialPlan}``, the same shape a grid trial has). Picklable: Tune checkpoints
    the searcher with the experiment."""

    params: dict  # key -> distribution (plain data)
    factory: TrialFactory
    seed: int

    def __call__(self, trial):
        values: dict = {}
        for key, d in self.params.items():
            if not all(wk in values and values[wk] in allowed for wk, allowed in (d.get("when") or {}).items()):
                continue
            t = d["type"]
            if t == "float":
                values[key] = trial.suggest_float(key, d["low"], d["high"], log=d["log"], step=d["step"])
            elif t == "int":
                values[key] = trial.suggest_int(key, d["low"], d["high"], log=d["log"], step=d["step"])
            else:
                values[key] = trial.suggest_categorical(key, d["choices"])
        plan = self.factory.make(values, self.seed, key=f"o{trial.number:04d}")
        return {"trial": plan.dump()}


def optuna_space(plan) -> OptunaSpace:
    """The define-by-run function of a SweepPlan's Optuna space."""
    return OptunaSpace({k: d.dump() for k, d in plan.optuna.params.items()}, plan.factory(), plan.optuna.seed)


def optuna_grid(plan) -> dict:
    """``sampler: grid``: every categorical's choices (validated at plan time)."""
    return {k: list(d.choices) for k, d in plan.optuna.params.items()}
