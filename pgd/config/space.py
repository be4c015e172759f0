"""The schema of a sweep's space file (``search_spaces/*.yaml``) as typed models.

A space file::

    name: table5                      # sweep name: MLflow experiment, Tune run, folders
    description: ...
    base: {model: atss_r50, data: {...}, schedule: {...}, distill: {...}}   # fixed run values
    teacher: {model: "{detector}_r101", checkpoint: null, train: {...}, resources: {...}}
    grid:                             # Tune grid axes: cartesian product (a list = a union of grids)
      method: [student, pgd]
      distill.strategy: {values: [box, pgw], when: {method: [pgd]}}
    exclude: [{method: fgfi, detector: [fcos]}]    # drop grid points matching every key
    params:                           # Optuna distributions (searcher.type: optuna), file order
      distill.alpha: {type: float, low: 0.005, high: 0.2, log: true}
      distill.k: {type: int, low: 1, high: 60, when: {distill.strategy: [pgw]}}
    seeds: [0, 1, 2]                  # repeats of every grid point (same seed = same data order, init)
    metric: AP                        # or objectives: [{metric: AP, mode: max}, ...]
    mode: max
    searcher: {type: grid | optuna, sampler: tpe | gp | grid, num_samples: 20, seed: 0}
    scheduler: {type: none | asha, grace_period: 1, max_t: null, reduction_factor: 2}
    resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0,
                trial_driver_cpus: 0.25, max_concurrent_trials: null, num_cpus: null}
    report: {rows: [detector, method], baseline: {method: student}, columns: [AP, ...], title: ...}

Sweep keys are dotted run-config paths (``schedule.epochs``, ``distill.alpha``) plus the
virtual keys ``method`` (``student`` = plain training, else the KD method) and ``detector``
(replaces the detector of ``base.model``, keeping its backbone). This module checks the
structure and that every key exists; :mod:`pgd.plan` checks the meaning (``when`` values
among the axis values, distributions within the run config's constraints, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from pgd.config.base import NonNegFloat, PosFloat, PosInt, Strict
from pgd.config.defaults import INLINE_SINGLE_WORKER, WORKER_START_TIMEOUT_S
from pgd.config.loading import load_yaml, register_union_tags, validate
from pgd.config.names import (
    ANALYSIS_NAMES,
    ANALYSIS_RUNS,
    COCO_METRICS,
    DIAGNOSTIC_PREFIX,
    MODES,
    OBJECTIVE_METRICS,
    REPORTED_METRICS,
    SAMPLERS,
    SCHEDULERS,
    SEARCHERS,
    SWEEP_METHODS,
    TRAIN_PREFIX,
    VIRTUAL_KEYS,
)
from pgd.errors import ConfigError


# ----------------------------------------------------------------------------- sections
class ResourcesSpec(Strict):
    """What one trial holds (Ray Tune + Ray Train)."""

    workers_per_trial: PosInt = 1  # DDP workers of one trial (Ray Train)
    cpus_per_worker: PosFloat = 1.0
    gpus_per_worker: NonNegFloat = 0.0  # fractional GPUs allowed (e.g. 0.5: two workers per GPU)
    trial_driver_cpus: NonNegFloat = 0.25  # the Tune function that drives one trial's trainer
    max_concurrent_trials: Optional[PosInt] = None  # null: as many as the cluster fits
    num_cpus: Optional[PosInt] = None  # size of the local cluster (laptop); null: all cores
    #: how long a trial's worker group may wait for its resources (busy or autoscaling cluster)
    start_timeout_s: PosFloat = WORKER_START_TIMEOUT_S
    #: a one-worker trial trains in its Tune process, without Ray Train (false: always Ray Train)
    inline_single_worker: bool = INLINE_SINGLE_WORKER

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, v):
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"must be <= 1 or a whole number, got {v}")
        return v

    def inline(self) -> bool:
        """Whether a trial trains in its own Tune process (one worker, ``inline_single_worker``)."""
        return self.workers_per_trial == 1 and self.inline_single_worker

    def trial_cpus(self) -> float:
        return self.trial_driver_cpus + self.workers_per_trial * self.cpus_per_worker

    def trial_gpus(self) -> float:
        return self.workers_per_trial * self.gpus_per_worker


class SearcherSpec(Strict):
    type: Literal[SEARCHERS] = "grid"
    sampler: Literal[SAMPLERS] = "tpe"  # optuna sampler
    num_samples: PosInt = 1  # optuna: number of trials
    seed: int = 0  # optuna sampler seed


class SchedulerSpec(Strict):
    type: Literal[SCHEDULERS] = "none"
    grace_period: PosInt = 1  # epochs before a trial may be stopped
    max_t: Optional[PosInt] = None  # null: the schedule's epochs
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0


class TeacherSpec(Strict):
    model: Optional[str] = None  # registry name; "{detector}" is replaced by the trial's detector
    checkpoint: Optional[str] = None  # an existing checkpoint ("{detector}" allowed): not trained
    train: dict[str, Any] = {}  # run-config overrides for training the teacher
    resources: Optional[ResourcesSpec] = None  # for the teacher trials; null: the space's resources


class ObjectiveSpec(Strict):
    metric: Literal[OBJECTIVE_METRICS] = "AP"
    mode: Literal[MODES] = "max"


class ReportSpec(Strict):
    rows: list[str] = ["detector", "method"]  # sweep keys grouping the runs into rows
    baseline: dict[str, Any] = {"method": "student"}  # the row every other row is compared with
    # metrics shown: REPORTED_METRICS, or any train/<loss term> or kd/<diagnostic> a trial reports
    columns: list[str] = list(COCO_METRICS)
    # true: add every KD-diagnostics column the runs have (pgd/distill/diagnostics.py): the
    # gradient ratios to the detection loss, the fg / bg position fractions per level
    diagnostics: bool = False
    title: Optional[str] = None

    @field_validator("columns")
    @classmethod
    def _known(cls, v):
        bad = [c for c in v if c not in REPORTED_METRICS and not c.startswith((TRAIN_PREFIX, DIAGNOSTIC_PREFIX))]
        if bad:
            raise ValueError(f"unknown column(s) {bad}; valid: {', '.join(REPORTED_METRICS)}, or "
                             f"{TRAIN_PREFIX}<loss term> / {DIAGNOSTIC_PREFIX}<diagnostic> (e.g. kd/ratio_kd)")
        return v


class AnalysisSpec(Strict):
    """One of the paper's analyses run at the end of the sweep (docs/analyses.md)."""

    name: Literal[ANALYSIS_NAMES]
    runs: Literal[ANALYSIS_RUNS] = "rows"  # rows: the lowest-seed finished run of each table row
    options: dict[str, Any] = {}  # the analysis' keyword options (e.g. percents for mask-out)


class _Conditional(Strict):
    """A grid axis or a distribution: ``when`` maps earlier keys to the values they must take
    for this one to apply (a single value means a list of one)."""

    when: dict[str, list[Any]] = {}

    @field_validator("when", mode="before")
    @classmethod
    def _lists(cls, v):
        return {k: (x if isinstance(x, list) else [x]) for k, x in v.items()} if isinstance(v, dict) else v


class GridAxis(_Conditional):
    """A grid axis: its values, and the values other axes must take for it to apply."""

    values: Annotated[list[Any], Field(min_length=1)]


class _Range(_Conditional):
    """A numeric distribution: ``low < high``; ``log`` needs ``low > 0`` and no step."""

    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log distribution needs low > 0, got low={self.low}")
        if self.log and self.step not in (None, 1):
            raise ValueError("log and step cannot be combined (Optuna)")
        return self


class FloatDist(_Range):
    type: Literal["float"]
    low: float
    high: float
    step: Optional[PosFloat] = None


class IntDist(_Range):
    type: Literal["int"]
    low: int
    high: int
    step: PosInt = 1


class CategoricalDist(_Conditional):
    type: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]


register_union_tags("float", "int", "categorical")
Distribution = Annotated[Union[FloatDist, IntDist, CategoricalDist], Field(discriminator="type")]


# ----------------------------------------------------------------------------- sweep keys
def _members(annotation) -> list:
    """The pydantic model classes an annotation can hold (through Optional/Annotated/Union)."""
    import typing

    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def check_sweep_key(key: str) -> None:
    """ConfigError unless ``key`` is a virtual key or a run-config path (``distill.alpha``:
    a key of some KD method's section)."""
    from pgd.config.run import RunConfig

    if key in VIRTUAL_KEYS:
        return
    if key == "seed":
        raise ConfigError("repeat trials with seeds: [0, 1, ...], not a key 'seed'")
    models = [RunConfig]
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields:
            where = ".".join(parts[:i]) or "the run config"
            raise ConfigError(
                f"unknown sweep key {key!r}: {where} has no key {part!r}; valid keys there: "
                f"{', '.join(sorted(fields))}" + (" (plus the virtual keys method, detector)" if i == 0 else ""))
        models = _members(fields[part].annotation)
        if not models and i < len(parts) - 1:
            raise ConfigError(f"unknown sweep key {key!r}: {'.'.join(parts[:i + 1])} is a value, not a section")


# ----------------------------------------------------------------------------- the space
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]


class SpaceSpec(Strict):
    """A validated space file (structure and key names; see :mod:`pgd.plan` for meaning)."""

    name: Name  # letters, digits, '_', '-', '.'; default: the file's stem
    description: str = ""
    base: dict[str, Any] = {}  # fixed run-config values of every trial
    teacher: TeacherSpec = TeacherSpec()
    grid: list[dict[str, GridAxis]] = []  # a mapping (one grid) or a list of them (their union)
    exclude: list[dict[str, Any]] = []
    params: dict[str, Distribution] = {}
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    metric: Literal[OBJECTIVE_METRICS] = "AP"
    mode: Literal[MODES] = "max"
    objectives: Optional[list[ObjectiveSpec]] = None  # multi-objective (Optuna)
    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    report: ReportSpec = ReportSpec()
    analysis: list[AnalysisSpec] = []  # the paper's analyses at the end of the sweep

    @field_validator("grid", mode="before")
    @classmethod
    def _grids(cls, v):
        grids = [v] if isinstance(v, dict) else v
        if not isinstance(grids, list):
            return v
        out = []
        for g in grids:
            if not isinstance(g, dict) or not g:
                raise ValueError("grid must map keys to values, or be a list of such mappings (their union)")
            out.append({k: ({"values": a} if isinstance(a, list) else a) for k, a in g.items()})
        return out

    @field_validator("exclude")
    @classmethod
    def _entries(cls, v):
        if any(not e for e in v):
            raise ValueError("exclude entries must be non-empty mappings")
        return v

    @model_validator(mode="after")
    def _coherent(self):
        if self.searcher.type == "grid" and self.params:
            raise ValueError("params (Optuna distributions) need searcher.type: optuna; a grid space "
                             "lists its values under grid")
        if self.searcher.type == "optuna" and self.grid:
            raise ValueError("an optuna space puts every axis under params (type: categorical for lists)")
        if self.searcher.type == "optuna" and len(self.seeds) > 1:
            raise ValueError("optuna spaces take one seed; repeat a grid space to measure seed variance")
        if self.searcher.type == "optuna" and self.searcher.sampler == "grid":
            bad = [k for k, d in self.params.items() if d.type != "categorical"]
            if bad:
                raise ValueError(f"sampler: grid needs categorical params; {', '.join(bad)} are not")
        if self.objectives and self.scheduler.type != "none":
            raise ValueError("multi-objective searches cannot use a scheduler (ASHA needs one metric)")
        if self.objectives and self.searcher.type != "optuna":
            raise ValueError("objectives (multi-objective) need searcher.type: optuna")
        if self.exclude and self.searcher.type != "grid":
            raise ValueError("exclude applies to grid spaces")
        return self

    def all_objectives(self) -> list[ObjectiveSpec]:
        return list(self.objectives) if self.objectives else [ObjectiveSpec(metric=self.metric, mode=self.mode)]


def check_space_keys(spec: SpaceSpec) -> None:
    """Every key a space names exists (grid axes, when, exclude, params, report rows)."""
    for i, grid in enumerate(spec.grid):
        for key, axis in grid.items():
            _keyed(f"grid[{i}].{key}" if len(spec.grid) > 1 else f"grid.{key}", key)
            if key == "method":
                for m in axis.values:
                    if m not in SWEEP_METHODS:
                        raise ConfigError(f"grid.method: unknown method {m!r}; valid methods are: "
                                          f"{', '.join(SWEEP_METHODS)}")
    for key in spec.params:
        _keyed(f"params.{key}", key)
    for j, entry in enumerate(spec.exclude):
        for key in entry:
            _keyed(f"exclude[{j}].{key}", key)
    for key in [*spec.report.rows, *spec.report.baseline]:
        _keyed("report", key)


def _keyed(where: str, key: str) -> None:
    try:
        check_sweep_key(key)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_space(path) -> tuple[SpaceSpec, str]:
    """(validated spec, file text). Errors name the file, the key path and the fix."""
    from pathlib import Path

    data, text = load_yaml(path, what="space file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (see search_spaces/ for examples)")
    data.setdefault("name", Path(path).stem)
    spec = validate(SpaceSpec, data, str(path), "space")
    try:
        check_space_keys(spec)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec, text
