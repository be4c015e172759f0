"""A space file compiled into a :class:`SweepPlan`: the teachers to train or reuse and every
trial as a fully resolved, validated :class:`~pgd.config.run.RunConfig` (or, for Optuna, the
validated distributions and the resolved base trial). No Ray: a pure step, tested on its own.

What ``--dry-run`` prints and writes (``<sweep>/plan.yaml``), what the Tune config of a trial
is (``{"trial": TrialPlan}``), what the trial trains and what MLflow records are one object.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pgd.config.base import Strict
from pgd.config.loading import merge, set_dotted
from pgd.config.names import STUDENT, TEACHER, VIRTUAL_KEYS
from pgd.config.run import RunConfig, parse_run, resolve_run, run_hash, split_model
from pgd.config.space import Distribution, ResourcesSpec, SpaceSpec, load_space
from pgd.errors import ConfigError
from pgd.plan.grid import base_value, expand_grid, point_method, point_name

#: trials measure inference latency on this many val images when a sweep optimises latency_ms
LATENCY_IMAGES = 10


class TrialPlan(Strict):
    """One trial, fully resolved: the Tune config of a trial is ``{"trial": <this>}``."""

    key: str  # stable id within the sweep (MLflow tag pgd.trial_id, Train run name, folder)
    name: str  # readable: "pgd strategy=pgw seed=1", "teacher atss_tiny"
    role: Literal["teacher", "trial"]
    method: str  # teacher | student | the KD method
    overrides: dict[str, Any] = {}  # the sweep keys this trial sets (grid axes / Optuna params)
    seed: int
    run: RunConfig  # resolved (every default filled, paths absolute)
    teacher_model: Optional[str] = None  # KD trials: the teacher's registry name
    teacher_hash: Optional[str] = None  # KD trials: TeacherPlan.hash; teachers: their own
    resources: ResourcesSpec
    publish_dir: Optional[str] = None  # teacher trials: the cache folder the teacher goes to


class TeacherPlan(Strict):
    model: str
    source: Literal["given", "cached", "train"]
    checkpoint: str  # absolute
    hash: str  # run hash of a trained teacher, sha256[:12] of a given checkpoint file
    dir: Optional[str] = None  # cache folder (trained / cached teachers)
    trial: Optional[TrialPlan] = None  # how it is (or was) trained


class OptunaPlan(Strict):
    params: dict[str, Distribution]
    seed: int
    base: TrialPlan  # the resolved base trial (what every suggestion is applied to)


class SweepPlan(Strict):
    sweep_id: str
    home: str
    sweep_dir: str
    space_file: str
    space_sha: str
    tracking_uri: str
    space: SpaceSpec
    teachers: list[TeacherPlan]
    trials: Optional[list[TrialPlan]] = None  # grid spaces
    optuna: Optional[OptunaPlan] = None  # optuna spaces

    def teacher(self, model: str) -> TeacherPlan:
        return next(t for t in self.teachers if t.model == model)

    def teacher_run(self, model: str) -> RunConfig:
        """The run a teacher is evaluated (or analysed) with: its training run, or for a given
        checkpoint the run of a trial distilling from it, with the teacher's model and no
        distill section."""
        t = self.teacher(model)
        if t.trial is not None:
            return t.trial.run
        trial = next(x for x in (self.trials or [self.optuna.base]) if x.teacher_model == model)
        d = trial.run.dump()
        d.update(model=model, distill=None, backbone_checkpoint=None, load_from=None,
                 work_dir=str(Path(self.sweep_dir) / "trials" / f"teacher-{model}-{t.hash}" / "work"))
        return resolve_run(parse_run(d, f"teacher {model} (given)"))

    def factory(self) -> TrialFactory:
        return TrialFactory(
            base=dict(self.space.base), teacher_template=teacher_template(self.space),
            teachers={t.model: (t.checkpoint, t.hash) for t in self.teachers},
            sweep_dir=self.sweep_dir, resources=self.space.resources.dump(),
            latency_images=latency_images(self.space))

    def write(self, path: str | Path | None = None) -> Path:
        import yaml

        out = Path(path) if path else Path(self.sweep_dir) / "plan.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(self.dump(), sort_keys=False, width=110))
        return out


# ----------------------------------------------------------------------------- trial runs
def teacher_template(spec: SpaceSpec) -> str | None:
    return spec.teacher.model or (spec.base.get("distill") or {}).get("teacher")


def latency_images(spec: SpaceSpec) -> int | None:
    if "latency_images" in spec.base:
        return None
    return LATENCY_IMAGES if any(o.metric == "latency_ms" for o in spec.all_objectives()) else None


def teacher_model_name(template: str | None, detector: str) -> str:
    if not template:
        raise ConfigError("teacher.model is required (e.g. '{detector}_r101') for distillation trials")
    try:
        return template.format(detector=detector)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"teacher.model {template!r}: only the placeholder {{detector}} is allowed") from None


@dataclass
class TrialFactory:
    """Builds a resolved TrialPlan from a point's overrides (picklable: the Optuna
    define-by-run function holds one)."""

    base: dict
    teacher_template: str | None
    teachers: dict  # teacher model -> (checkpoint, hash)
    sweep_dir: str
    resources: dict
    latency_images: int | None = None
    source: str = "space file"

    def detector(self, overrides: dict) -> str:
        return str(overrides.get("detector", base_value(self.base, "detector")))

    def teacher_for(self, overrides: dict) -> str | None:
        if point_method(overrides, self.base) == STUDENT:
            return None
        return teacher_model_name(self.teacher_template, self.detector(overrides))

    def make(self, overrides: dict, seed: int, key: str) -> TrialPlan:
        name = point_name(overrides, seed, self.base)
        run = copy.deepcopy(self.base)
        method = point_method(overrides, self.base)
        if "detector" in overrides:
            backbone = split_model(str(run.get("model", "atss_tiny")))[1]
            run["model"] = f"{overrides['detector']}_{backbone}"
        for k, v in overrides.items():
            if k not in VIRTUAL_KEYS:
                set_dotted(run, k, v, f"{self.source}, trial {name!r}")
        run["seed"] = int(seed)
        run["work_dir"] = str(Path(self.sweep_dir) / "trials" / key / "work")
        if self.latency_images is not None:
            run["latency_images"] = self.latency_images
        teacher = self.teacher_for(overrides)
        if method == STUDENT:
            run["distill"] = None
        else:
            distill = dict(run.get("distill") or {})
            distill["method"] = method
            distill["teacher"] = teacher
            if teacher not in self.teachers:
                raise ConfigError(f"{self.source}: trial {name!r} needs teacher {teacher!r}, which the plan "
                                  "has not planned (a detector outside the planned ones?)")
            distill["teacher_checkpoint"] = self.teachers[teacher][0]
            run["distill"] = distill
        resolved = resolve_run(parse_run(run, f"{self.source}, trial {name!r}"))
        return TrialPlan(key=key, name=name, role="trial", method=method, overrides=dict(overrides),
                         seed=int(seed), run=resolved, teacher_model=teacher,
                         teacher_hash=self.teachers[teacher][1] if teacher else None,
                         resources=ResourcesSpec.model_validate(self.resources))


def teacher_run(spec: SpaceSpec, model: str, source: str) -> RunConfig:
    """The teacher's run: the base without distillation, the teacher's model, and the space's
    ``teacher.train`` overrides (e.g. a longer, multi-scale schedule)."""
    run = copy.deepcopy(spec.base)
    run.pop("distill", None)
    run["model"] = model
    run = merge(run, spec.teacher.train or {})
    run.pop("work_dir", None)
    return resolve_run(parse_run(run, f"{source}, teacher {model!r} (base + teacher.train)"))


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------- checks
def _data_classes(run: RunConfig) -> tuple[str, ...]:
    from pgd.training.data import data_classes

    return data_classes(run.data)


def check_data(runs: list[RunConfig]) -> None:
    """Every distinct data section exists (shapes: absent = generated, or made with the same
    parameters)."""
    from pgd.training.data import check_data_files

    seen = set()
    for run in runs:
        sig = run.data.model_dump_json()
        if sig not in seen:
            seen.add(sig)
            check_data_files(run.data)


def check_weights(runs: list[RunConfig]) -> None:
    """Backbone weights fit their backbone (every key matched); ``load_from`` checkpoints
    exist and are checkpoints."""
    seen = set()
    for run in runs:
        if run.backbone_checkpoint and (run.backbone_checkpoint, run.model) not in seen:
            from pgd.detectors import model_config
            from pgd.integration.checkpoints import check_backbone_checkpoint
            from pgd.paths import check_local_file

            check_local_file(run.backbone_checkpoint, "backbone_checkpoint")
            seen.add((run.backbone_checkpoint, run.model))
            check_backbone_checkpoint(run.backbone_checkpoint, model_config(run.model, 1,
                                      backbone_checkpoint=run.backbone_checkpoint))
        if run.load_from and run.load_from not in seen:
            from pgd.integration.checkpoints import load_state

            seen.add(run.load_from)
            load_state(run.load_from, "load_from")


def check_given_teacher(model: str, path: Path, run_like: RunConfig) -> None:
    """A given teacher checkpoint is a checkpoint of ``model`` (zero missing/unexpected keys)."""
    from pgd.detectors import model_config
    from pgd.integration.checkpoints import check_detector_checkpoint

    cfg = model_config(model, len(_data_classes(run_like)))
    check_detector_checkpoint(str(path), cfg, what=f"teacher.checkpoint (for {model})")


# ----------------------------------------------------------------------------- the plan
def build_plan(space_path: str | Path, *, name: str | None = None, tracking_uri: str | None = None,
               check_tracking: bool = True, check_checkpoints: bool = True) -> SweepPlan:
    """Compile a space file into a SweepPlan, checking everything that can be checked before
    Ray starts (see docs/architecture.md, "Sweep plan"). Errors name the space file."""
    try:
        return _build_plan(space_path, name, tracking_uri, check_tracking, check_checkpoints)
    except ConfigError as exc:
        if str(exc).startswith(str(space_path)):
            raise
        raise ConfigError(f"{space_path}: {exc}") from None


def _build_plan(space_path, name, tracking_uri, check_tracking, check_checkpoints) -> SweepPlan:
    from pgd.paths import home, resolve
    from pgd.plan.checks import check_sweep_name, check_tracking_uri, default_tracking_uri
    from pgd.plan.optuna import check_distributions

    spec, text = load_space(space_path)
    src = str(space_path)
    sha = hashlib.sha256(text.encode()).hexdigest()
    sweep_id = name or sweep_id_of(spec, text)
    h = home()
    sweep_dir = check_sweep_name(sweep_id, h)
    uri = tracking_uri or default_tracking_uri()
    if check_tracking:
        check_tracking_uri(uri)
    rows = spec.report.rows
    for i, a in enumerate(spec.analysis):
        from pgd.reporting.analyses import check_options

        try:
            check_options(a.name, a.options)
        except ConfigError as exc:
            raise ConfigError(f"analysis[{i}]: {exc}") from None
    bad = [k for k in spec.report.baseline if k not in rows]
    if bad:
        raise ConfigError(f"{src}: report.baseline key(s) {bad} are not among report.rows {rows}")

    template = teacher_template(spec)
    factory = TrialFactory(base=dict(spec.base), teacher_template=template, teachers={},
                           sweep_dir=str(sweep_dir), resources=spec.resources.dump(),
                           latency_images=latency_images(spec), source=src)
    points = expand_grid(spec) if spec.searcher.type == "grid" else None
    if points is not None:
        needed = sorted({factory.teacher_for(p.overrides) for p in points} - {None})
    else:
        methods = _param_choices(spec, "method") or [base_value(spec.base, "method")]
        dets = _param_choices(spec, "detector") or [base_value(spec.base, "detector")]
        needed = sorted({teacher_model_name(template, d) for d in dets}) if set(methods) != {STUDENT} else []

    teachers = []
    t_res = spec.teacher.resources or spec.resources
    for model in needed:
        det = split_model(model)[0]
        if spec.teacher.checkpoint:
            path = resolve(teacher_model_name(spec.teacher.checkpoint, det))
            from pgd.paths import check_local_file

            check_local_file(path, f"{src}: teacher.checkpoint (for {model})")
            teachers.append(TeacherPlan(model=model, source="given", checkpoint=str(path), hash=_file_sha(path)))
            continue
        run = teacher_run(spec, model, src)
        th = run_hash(run)
        key = f"teacher-{model}-{th}"
        out = h / "cache" / "teachers" / f"{model}-{th}"
        run = resolve_run(parse_run({**run.dump(), "work_dir": str(sweep_dir / "trials" / key / "work")}))
        trial = TrialPlan(key=key, name=f"teacher {model}", role="teacher", method=TEACHER,
                          seed=run.seed, run=run, teacher_hash=th, resources=t_res, publish_dir=str(out))
        teachers.append(TeacherPlan(model=model, source="cached" if (out / "teacher.pth").is_file() else "train",
                                    checkpoint=str(out / "teacher.pth"), hash=th, dir=str(out), trial=trial))
    factory.teachers = {t.model: (t.checkpoint, t.hash) for t in teachers}

    trials = optuna_plan = None
    if points is not None:
        trials = [factory.make(p.overrides, p.seed, f"t{i:03d}") for i, p in enumerate(points)]
        runs = [t.run for t in trials]
    else:
        base_trial = factory.make({}, spec.seeds[0], "base")
        check_distributions(spec, factory)
        optuna_plan = OptunaPlan(params=spec.params, seed=int(spec.seeds[0]), base=base_trial)
        runs = [base_trial.run]
    runs += [t.trial.run for t in teachers if t.trial is not None]
    check_data(runs)
    if check_checkpoints:
        check_weights(runs)
        for t in teachers:
            if t.source == "given":
                check_given_teacher(t.model, Path(t.checkpoint), runs[0])
    return SweepPlan(sweep_id=sweep_id, home=str(h), sweep_dir=str(sweep_dir), space_file=str(Path(space_path).resolve()),
                     space_sha=sha, tracking_uri=uri, space=spec, teachers=teachers, trials=trials,
                     optuna=optuna_plan)


def sweep_id_of(spec: SpaceSpec, text: str) -> str:
    """A sweep's default identity: the space's name and the hash of the space file, so running
    the same file again resumes its sweep and an edited file starts a new one."""
    return f"{spec.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def default_sweep_id(space_path: str | Path) -> str:
    return sweep_id_of(*load_space(space_path))


def _param_choices(spec: SpaceSpec, key: str) -> list | None:
    d = spec.params.get(key)
    return list(d.choices) if d is not None and d.type == "categorical" else None


# ----------------------------------------------------------------------------- text
def describe(plan: SweepPlan, conc=None) -> str:
    """The plan as a person reads it (printed by ``--dry-run`` and at the start of a sweep)."""
    spec = plan.space
    lines = [f"sweep '{spec.name}': {spec.description}".rstrip(": "),
             f"sweep id: {plan.sweep_id} (folder {plan.sweep_dir})",
             f"MLflow: {plan.tracking_uri}"]
    res = spec.resources
    lines.append(
        f"resources per trial: {res.trial_driver_cpus:g} driver CPU + {res.workers_per_trial} worker(s) x "
        f"({res.cpus_per_worker:g} CPU, {res.gpus_per_worker:g} GPU) = {res.trial_cpus():g} CPU, "
        f"{res.trial_gpus():g} GPU")
    if conc is not None:
        if conc.max_concurrent is not None:
            lines.append(f"concurrency: {conc.max_concurrent} trial(s) at once ({conc.reason})")
        else:
            lines.append(f"concurrency: decided when Ray starts ({conc.reason})")
    s, sch = spec.searcher, spec.scheduler
    lines.append(f"searcher: {s.type}" + (f" ({s.sampler}, {s.num_samples} samples, seed {s.seed})"
                                          if s.type == "optuna" else "")
                 + f"; scheduler: {sch.type}" + (f" (grace {sch.grace_period}, max_t {sch.max_t}, "
                                                 f"reduction {sch.reduction_factor:g})" if sch.type == "asha" else ""))
    lines.append("objective(s): " + ", ".join(f"{o.metric} ({o.mode})" for o in spec.all_objectives()))
    for t in plan.teachers:
        state = {"given": "given", "cached": "cached (trained before)", "train": "to train once"}[t.source]
        lines.append(f"teacher {t.model}: {state} -> {t.checkpoint}")
    if plan.trials is not None:
        lines.append(f"{len(plan.trials)} trial(s):")
        for t in plan.trials:
            lines.append(f"  {t.key}  {t.name}")
    else:
        lines.append(f"optuna space (define-by-run, file order; 'when' = conditional), base trial: {plan.optuna.base.name}:")
        for k, d in plan.optuna.params.items():
            rng = d.choices if d.type == "categorical" else f"[{d.low}, {d.high}]" + (" log" if d.log else "")
            cond = f" when {d.when}" if d.when else ""
            lines.append(f"  {k}: {d.type} {rng}{cond}")
    base = spec.report.baseline
    base = ", ".join(f"{k}={v}" for k, v in base.items()) if isinstance(base, dict) else base
    lines.append(f"table rows: {', '.join(spec.report.rows)}; baseline: {base}")
    return "\n".join(lines)
