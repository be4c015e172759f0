"""Search spaces as data: the schema of ``search_spaces/*.yaml``, its validation, and the
expansion of a space into trials (grids) or an Optuna define-by-run function.

A space file::

    name: table5                      # sweep name: MLflow experiment, Tune run, folders
    base: {model: atss_r50, data: {...}, schedule: {...}, distill: {...}}   # fixed values
    teacher: {model: "{detector}_r101", checkpoint: null, train: {...}}      # or a path
    grid:                             # Tune grid axes (cartesian product, deduplicated)
      method: [student, pgd]
      distill.strategy: {values: [box, pgw], when: {method: [pgd]}}
    params:                           # Optuna distributions (searcher: optuna)
      distill.alpha: {type: float, low: 0.005, high: 0.2, log: true}
      distill.k_cls: {type: int, low: 1, high: 60, when: {distill.strategy: [pgw, topk_eq]}}
    seeds: [0, 1, 2]                  # repeats of every grid point
    metric: AP                        # or objectives: [{metric: AP, mode: max}, ...]
    mode: max
    searcher: {type: grid | optuna, sampler: tpe | gp | grid, num_samples: 20, seed: 0}
    scheduler: {type: none | asha, grace_period: 1, max_t: null, reduction_factor: 2}
    resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0,
                trial_driver_cpus: 0.25, max_concurrent_trials: null}
    report: {rows: [detector, method], baseline: {method: student}}

Keys are dotted RunConfig paths (``schedule.epochs``, ``distill.alpha``, ``seed``) plus two
virtual keys: ``method`` (``student`` = plain training, else the KD method: pgd, fgd, ...)
and ``detector`` (replaces the detector of ``base.model``, keeping its backbone).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgd.configs import from_dict, merge, set_dotted, to_dict
from pgd.errors import ConfigError, check_range, unknown_name
from pgd.evaluation.coco import KEYS as COCO_KEYS

VIRTUAL_KEYS = ("method", "detector")
METHODS = ("student", "pgd", "fgd", "defeat", "frs", "fgfi", "fkd", "ld", "crosskd")
DIST_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "gp", "grid")
METRICS = (*COCO_KEYS, "MR", "JI", "latency_ms")  # objectives a trial reports


@dataclass
class ResourcesSpec:
    workers_per_trial: int = 1  # DDP workers of one trial (Ray Train)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional GPUs allowed (e.g. 0.5: two workers per GPU)
    trial_driver_cpus: float = 0.25  # the Tune function that drives one trial's trainer
    max_concurrent_trials: int | None = None  # null: as many as the cluster fits
    num_cpus: int | None = None  # size of the local cluster (laptop); null: all cores

    def validate(self, path):
        check_range(f"{path}.workers_per_trial", self.workers_per_trial, 1)
        check_range(f"{path}.cpus_per_worker", self.cpus_per_worker, 0, lo_open=True)
        check_range(f"{path}.gpus_per_worker", self.gpus_per_worker, 0)
        check_range(f"{path}.trial_driver_cpus", self.trial_driver_cpus, 0)
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            raise ConfigError(f"{path}.gpus_per_worker={self.gpus_per_worker} must be <= 1 or whole")
        if self.max_concurrent_trials is not None:
            check_range(f"{path}.max_concurrent_trials", self.max_concurrent_trials, 1)
        if self.num_cpus is not None:
            check_range(f"{path}.num_cpus", self.num_cpus, 1)

    def trial_cpus(self) -> float:
        return self.trial_driver_cpus + self.workers_per_trial * self.cpus_per_worker

    def trial_gpus(self) -> float:
        return self.workers_per_trial * self.gpus_per_worker


@dataclass
class SearcherSpec:
    type: str = "grid"  # grid | optuna
    sampler: str = "tpe"  # optuna sampler: tpe | gp | grid
    num_samples: int = 1  # optuna: number of trials
    seed: int = 0

    def validate(self, path):
        if self.type not in ("grid", "optuna"):
            raise unknown_name("searcher", self.type, ("grid", "optuna"))
        if self.sampler not in SAMPLERS:
            raise unknown_name("optuna sampler", self.sampler, SAMPLERS)
        check_range(f"{path}.num_samples", self.num_samples, 1)


@dataclass
class SchedulerSpec:
    type: str = "none"  # none | asha
    grace_period: int = 1  # epochs before a trial may be stopped
    max_t: int | None = None  # null: the schedule's epochs
    reduction_factor: float = 2.0

    def validate(self, path):
        if self.type not in ("none", "asha"):
            raise unknown_name("scheduler", self.type, ("none", "asha"))
        check_range(f"{path}.grace_period", self.grace_period, 1)
        check_range(f"{path}.reduction_factor", self.reduction_factor, 1, lo_open=True)


@dataclass
class TeacherSpec:
    model: str | None = None  # registry name; "{detector}" is replaced by the trial's detector
    checkpoint: str | None = None  # an existing checkpoint ("{detector}" allowed): not trained
    train: dict = field(default_factory=dict)  # run-config overrides for training the teacher
    resources: ResourcesSpec | None = None  # for the teacher trials; null: the space's resources


@dataclass
class ObjectiveSpec:
    metric: str = "AP"
    mode: str = "max"

    def validate(self, path):
        if self.mode not in ("max", "min"):
            raise unknown_name("mode", self.mode, ("max", "min"))
        if self.metric not in METRICS:
            raise unknown_name("metric", self.metric, METRICS)


@dataclass
class ReportSpec:
    rows: list[str] = field(default_factory=lambda: ["detector", "method"])
    baseline: dict = field(default_factory=lambda: {"method": "student"})
    columns: list[str] = field(default_factory=lambda: ["AP", "AP50", "AP75", "APS", "APM", "APL"])
    title: str | None = None


@dataclass
class SpaceSpec:
    name: str
    description: str = ""
    base: dict = field(default_factory=dict)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    grid: Any = field(default_factory=dict)  # axes, or a list of grids (their union)
    exclude: list[dict] = field(default_factory=list)  # drop trials matching all keys of an entry
    params: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "AP"
    mode: str = "max"
    objectives: list[ObjectiveSpec] | None = None
    searcher: SearcherSpec = field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    report: ReportSpec = field(default_factory=ReportSpec)

    def validate(self, path):
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ConfigError(f"name={self.name!r} must be letters, digits, '_', '-', '.'")
        ObjectiveSpec(self.metric, self.mode).validate(path)
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if self.searcher.type == "grid" and self.params:
            raise ConfigError(
                "params (Optuna distributions) need searcher.type: optuna; a grid space lists its "
                "values under grid"
            )
        if self.searcher.type == "optuna" and self.grids():
            raise ConfigError("an optuna space puts every axis under params (type: categorical for lists)")
        if self.searcher.type == "optuna" and len(self.seeds) > 1:
            raise ConfigError("optuna spaces take one seed; repeat a grid space to measure seed variance")
        if self.objectives and self.scheduler.type != "none":
            raise ConfigError("multi-objective searches cannot use a scheduler (ASHA needs one metric)")
        if self.objectives and self.searcher.type != "optuna":
            raise ConfigError("objectives (multi-objective) need searcher.type: optuna")
        if not isinstance(self.grid, (dict, list)) or (
            isinstance(self.grid, list) and not all(isinstance(g, dict) and g for g in self.grid)
        ):
            raise ConfigError("grid must map keys to values, or be a list of such grids (their union)")
        for g in self.grids():
            for key in g:
                if key == "seed":
                    raise ConfigError("repeat trials with seeds: [0, 1, ...], not a grid axis 'seed'")
                _check_key(key)
        for key in self.params:
            _check_key(key)
        for entry in self.exclude:
            if not isinstance(entry, dict) or not entry:
                raise ConfigError(f"exclude entries must be non-empty mappings, got {entry!r}")
            for key in entry:
                _check_key(key)

    def grids(self) -> list[dict]:
        return list(self.grid) if isinstance(self.grid, list) else ([self.grid] if self.grid else [])


def _check_key(key: str) -> None:
    from pgd.distill.config import DistillConfig
    from pgd.training.runconfig import RunConfig

    if key in VIRTUAL_KEYS:
        return
    import dataclasses

    head, *rest = key.split(".")
    run_fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if head not in run_fields:
        raise ConfigError(f"unknown sweep key {key!r}; use method, detector or a RunConfig path such as "
                          f"schedule.epochs / distill.alpha (top-level keys: {', '.join(run_fields)})")
    if head == "distill" and rest:
        valid = [f.name for f in dataclasses.fields(DistillConfig)]
        if rest[0] not in valid:
            raise unknown_name("distill key", rest[0], valid)


# ---------------------------------------------------------------------------- loading
def load_space(path: str | Path) -> tuple[SpaceSpec, str]:
    """(validated spec, file text). Errors name the file and the bad key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"space file {str(path)!r} not found (see search_spaces/ for examples)")
    text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    data.setdefault("name", p.stem)
    try:
        spec = from_dict(SpaceSpec, data, "space")
        _validate_axes(spec)
        for trial in (expand_grid(spec) if spec.searcher.type == "grid" else []):
            trial_run_config(spec, trial, teacher_checkpoint="<teacher>", validate=True)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec, text


def _axis(spec_value, key) -> tuple[list, dict]:
    """A grid axis as (values, when)."""
    if isinstance(spec_value, dict):
        unknown = set(spec_value) - {"values", "when"}
        if unknown or "values" not in spec_value:
            raise ConfigError(f"grid.{key} must be a list or {{values: [...], when: {{...}}}}")
        values, when = spec_value["values"], spec_value.get("when") or {}
    else:
        values, when = spec_value, {}
    if not isinstance(values, list) or not values:
        raise ConfigError(f"grid.{key} must list at least one value, got {values!r}")
    if not isinstance(when, dict):
        raise ConfigError(f"grid.{key}.when must map keys to lists of allowed values")
    return values, {k: (v if isinstance(v, list) else [v]) for k, v in when.items()}


def _validate_axes(spec: SpaceSpec) -> None:
    for key, v in [kv for g in spec.grids() for kv in g.items()]:
        values, when = _axis(v, key)
        if key == "method":
            for m in values:
                if m not in METHODS:
                    raise unknown_name("method", m, METHODS)
        for wk in when:
            _check_key(wk)
    for key, d in spec.params.items():
        if not isinstance(d, dict) or d.get("type") not in DIST_TYPES:
            raise ConfigError(f"params.{key} needs type: one of {', '.join(DIST_TYPES)}")
        t = d["type"]
        allowed = {"type", "when", "log", "step"} | ({"low", "high"} if t != "categorical" else {"choices"})
        extra = set(d) - allowed
        if extra:
            raise ConfigError(f"params.{key}: unknown field(s) {sorted(extra)} for type {t}")
        if t == "categorical":
            if not isinstance(d.get("choices"), list) or not d["choices"]:
                raise ConfigError(f"params.{key}.choices must be a non-empty list")
        else:
            if "low" not in d or "high" not in d or not d["low"] < d["high"]:
                raise ConfigError(f"params.{key} needs low < high, got low={d.get('low')} high={d.get('high')}")
            if d.get("log") and d["low"] <= 0:
                raise ConfigError(f"params.{key}: a log distribution needs low > 0, got {d['low']}")


def _when_ok(when: dict, values: dict, base: dict) -> bool:
    for k, allowed in when.items():
        v = values.get(k, _base_value(base, k))
        if v not in allowed:
            return False
    return True


def _base_value(base: dict, key: str):
    if key == "method":
        return (base.get("distill") or {}).get("method", "pgd") if base.get("distill") else "student"
    if key == "detector":
        return str(base.get("model", "atss_tiny")).rsplit("_", 1)[0]
    cur: Any = base
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


# ---------------------------------------------------------------------------- grids
def expand_grid(spec: SpaceSpec) -> list[dict]:
    """Every trial of a grid space: the cartesian product of the axes, axes dropped where
    their ``when`` does not hold, duplicates removed, times the seeds. Each trial is a dict
    of overrides (virtual + dotted keys) with ``seed``."""
    trials, seen = [], set()
    for grid in spec.grids() or [{}]:
        for kept in _expand_one(spec, grid):
            if any(_excluded(entry, kept, spec.base) for entry in spec.exclude):
                continue
            key = json.dumps(kept, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            for seed in spec.seeds:
                trials.append({**kept, "seed": int(seed)})
    return trials


def _excluded(entry: dict, values: dict, base: dict) -> bool:
    for k, allowed in entry.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if values.get(k, _base_value(base, k)) not in allowed:
            return False
    return True


def _expand_one(spec: SpaceSpec, grid: dict):
    axes = [(k, *_axis(v, k)) for k, v in grid.items()]
    for combo in itertools.product(*[vals for _, vals, _ in axes]) if axes else [()]:
        values = {}
        for (key, _vals, _when), value in zip(axes, combo):
            values[key] = value
        # drop axes whose condition fails (conditions see the final values of other axes)
        kept = {k: v for (k, _vals, when), v in zip(axes, combo) if _when_ok(when, values, spec.base)}
        if trial_method(kept, spec.base) == "student":
            kept = {k: v for k, v in kept.items() if not k.startswith("distill.")}
        yield kept


def trial_method(values: dict, base: dict) -> str:
    """``student`` (plain training) or the KD method of a trial's overrides over the base."""
    return values.get("method", _base_value(base, "method"))


def trial_name(overrides: dict) -> str:
    parts = []
    for k, v in overrides.items():
        short = k.split(".")[-1]
        parts.append(str(v) if k in VIRTUAL_KEYS else f"{short}={v}")
    return "_".join(parts).replace("/", "-")[:120] or "trial"


# ---------------------------------------------------------------------------- run configs
def teacher_model_name(spec: SpaceSpec, overrides: dict) -> str:
    det = overrides.get("detector", _base_value(spec.base, "detector"))
    template = spec.teacher.model or (spec.base.get("distill") or {}).get("teacher")
    if not template:
        raise ConfigError("teacher.model is required (e.g. '{detector}_r101') for distillation trials")
    return template.format(detector=det)


def trial_run_config(spec: SpaceSpec, overrides: dict, *, teacher_checkpoint: str | None,
                     validate: bool = False) -> dict:
    """The full run-config dict of one trial (base + overrides + teacher)."""
    run = copy.deepcopy(spec.base)
    method = trial_method(overrides, spec.base)
    if "detector" in overrides:
        backbone = str(run.get("model", "atss_tiny")).rsplit("_", 1)[-1]
        run["model"] = f"{overrides['detector']}_{backbone}"
    for key, value in overrides.items():
        if key in VIRTUAL_KEYS:
            continue
        set_dotted(run, key, value)
    if method == "student":
        run["distill"] = None
    else:
        distill = dict(run.get("distill") or {})
        distill["method"] = method
        distill["teacher"] = teacher_model_name(spec, overrides)
        if teacher_checkpoint is not None:
            distill["teacher_checkpoint"] = teacher_checkpoint
        run["distill"] = distill
    if validate:
        from pgd.distill.config import distill_config
        from pgd.training.runconfig import run_config

        r = run_config(run)
        if r.distill is not None:
            distill_config(r.distill)
    return run


def trial_run_config_with_teacher(spec: SpaceSpec, overrides: dict, teacher_checkpoints: dict) -> dict:
    """A trial's run config with the checkpoint of the teacher it distils from (if any)."""
    ckpt = None
    if trial_method(overrides, spec.base) != "student":
        ckpt = teacher_checkpoints.get(teacher_model_name(spec, overrides))
    return trial_run_config(spec, overrides, teacher_checkpoint=ckpt)


def teacher_run_config(spec: SpaceSpec, teacher_model: str) -> dict:
    """Run config that trains a teacher: the base without distillation, the teacher's model,
    and the space's teacher.train overrides (e.g. a longer, multi-scale schedule)."""
    run = copy.deepcopy(spec.base)
    run.pop("distill", None)
    run["model"] = teacher_model
    return merge(run, spec.teacher.train or {})


def sweep_id(spec: SpaceSpec, text: str) -> str:
    """A sweep's identity: the space's name and the hash of the space file, so running the
    same file again resumes its sweep and an edited file starts a new one."""
    return f"{spec.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def config_hash(run: dict) -> str:
    """Stable hash of what determines a trained model (paths of outputs excluded)."""
    from pgd.training.runconfig import run_config

    resolved = to_dict(run_config({k: v for k, v in run.items() if k not in ("work_dir", "resume")}))
    for k in ("work_dir", "resume"):
        resolved.pop(k, None)
    blob = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- optuna
@dataclass
class OptunaSpace:
    """Define-by-run function for OptunaSearch: conditional params are only suggested when
    their ``when`` holds for the values suggested before them (file order). A picklable
    class, since Tune checkpoints the searcher with the experiment."""

    params: dict
    base: dict
    seed: int

    def __call__(self, trial):
        values: dict = {}
        for key, d in self.params.items():
            when = {k: (v if isinstance(v, list) else [v]) for k, v in (d.get("when") or {}).items()}
            if not _when_ok(when, values, self.base):
                continue
            t = d["type"]
            if t == "float":
                values[key] = trial.suggest_float(key, d["low"], d["high"], log=bool(d.get("log")),
                                                  step=d.get("step"))
            elif t == "int":
                values[key] = trial.suggest_int(key, int(d["low"]), int(d["high"]), log=bool(d.get("log")),
                                                step=int(d.get("step") or 1))
            else:
                values[key] = trial.suggest_categorical(key, d["choices"])
        return {"seed": self.seed}


def optuna_space(spec: SpaceSpec) -> OptunaSpace:
    return OptunaSpace(dict(spec.params), dict(spec.base), int(spec.seeds[0]))


def objectives(spec: SpaceSpec) -> list[ObjectiveSpec]:
    return list(spec.objectives) if spec.objectives else [ObjectiveSpec(spec.metric, spec.mode)]


# ---------------------------------------------------------------------------- resources
@dataclass
class Concurrency:
    per_trial_cpus: float
    per_trial_gpus: float
    cluster_cpus: float | None
    cluster_gpus: float | None
    max_concurrent: int | None
    reason: str


def plan_concurrency(res: ResourcesSpec, cluster_cpus: float | None, cluster_gpus: float | None) -> Concurrency:
    """How many trials may run at once without nested resources deadlocking: each running
    trial holds its driver CPU while its trainer waits for worker resources, so every
    admitted trial must be able to get its whole bundle. Raises when not even one fits."""
    cpus, gpus = res.trial_cpus(), res.trial_gpus()
    if cluster_cpus is None:
        return Concurrency(cpus, gpus, None, None, res.max_concurrent_trials,
                           "cluster size unknown until Ray starts")
    fit = math.floor((cluster_cpus + 1e-9) / cpus) if cpus > 0 else 10**6
    why = f"{cluster_cpus:g} CPUs / {cpus:g} per trial"
    if gpus > 0:
        g = cluster_gpus or 0
        fit_g = math.floor((g + 1e-9) / gpus)
        if fit_g < fit:
            fit, why = fit_g, f"{g:g} GPUs / {gpus:g} per trial"
    if fit < 1:
        raise ConfigError(
            f"one trial needs {cpus:g} CPUs ({res.trial_driver_cpus:g} driver + {res.workers_per_trial} "
            f"workers x {res.cpus_per_worker:g}) and {gpus:g} GPUs, but the cluster has "
            f"{cluster_cpus:g} CPUs and {cluster_gpus or 0:g} GPUs; lower resources.* or use a bigger cluster"
        )
    if res.max_concurrent_trials is not None and res.max_concurrent_trials > fit:
        raise ConfigError(
            f"resources.max_concurrent_trials={res.max_concurrent_trials} but only {fit} trials fit at "
            f"once ({why}); trials beyond that would hold driver CPUs while their workers wait "
            "(deadlock). Lower it or leave it null"
        )
    n = res.max_concurrent_trials or fit
    return Concurrency(cpus, gpus, cluster_cpus, cluster_gpus, n, why)
