"""The sweep driver: space file -> teachers (trained once, cached by config hash) -> Ray Tune
over Ray Train trials -> MLflow record -> paper-style table.

Local default: ``ray.init(address="local")`` with the dashboard on (a bare ``ray.init()``
would join any stale cluster; with the dashboard off, early-stopped Train trials leak
placement groups and the sweep hangs). On a cluster: ``RAY_ADDRESS`` / ``ray job submit``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pgd.configs import to_dict
from pgd.errors import ConfigError
from pgd.paths import PROJECT_ROOT, home, resolve
from pgd.sweep.space import (
    SpaceSpec,
    config_hash,
    expand_grid,
    load_space,
    objectives,
    plan_concurrency,
    teacher_model_name,
    teacher_run_config,
    trial_method,
    trial_name,
)
from pgd.sweep.space import (
    sweep_id as default_sweep_id,
)

log = logging.getLogger("pgd.sweep")


def say(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- planning
def needed_teachers(spec: SpaceSpec, trials: list[dict] | None) -> list[str]:
    """Teacher model names the space's distillation trials need."""
    if spec.searcher.type == "grid":
        models = []
        for t in trials or []:
            if trial_method(t, spec.base) != "student":
                models.append(teacher_model_name(spec, t))
        return sorted(set(models))
    if spec.base.get("distill") or "method" in spec.params:
        dets = spec.params.get("detector", {}).get("choices") or [None]
        return sorted({teacher_model_name(spec, {"detector": d} if d else {}) for d in dets})
    return []


def teacher_plan(spec: SpaceSpec, models: list[str]) -> dict[str, dict]:
    """model -> {checkpoint, run, hash, dir, cached}: given checkpoints, or cached/trained ones."""
    plan = {}
    for model in models:
        det = model.rsplit("_", 1)[0]
        if spec.teacher.checkpoint:
            path = resolve(spec.teacher.checkpoint.format(detector=det))
            if not path.is_file():
                raise ConfigError(f"teacher.checkpoint {str(path)!r} (for {model}) does not exist")
            plan[model] = dict(checkpoint=str(path), cached=True, given=True)
            continue
        run = teacher_run_config(spec, model)
        h = config_hash(run)
        out = home() / "cache" / "teachers" / f"{model}-{h}"
        plan[model] = dict(checkpoint=str(out / "teacher.pth"), run=run, hash=h, dir=str(out),
                           cached=(out / "teacher.pth").is_file(), given=False)
    return plan


def describe_plan(spec: SpaceSpec, trials, teachers: dict, conc) -> str:
    lines = [f"sweep '{spec.name}': {spec.description}".rstrip(": ")]
    res = spec.resources
    lines.append(
        f"resources per trial: {res.trial_driver_cpus:g} driver CPU + {res.workers_per_trial} worker(s) x "
        f"({res.cpus_per_worker:g} CPU, {res.gpus_per_worker:g} GPU) = {conc.per_trial_cpus:g} CPU, "
        f"{conc.per_trial_gpus:g} GPU"
    )
    if conc.max_concurrent is not None:
        lines.append(f"concurrency: {conc.max_concurrent} trial(s) at once ({conc.reason})")
    else:
        lines.append(f"concurrency: decided when Ray starts ({conc.reason})")
    sched = spec.scheduler
    lines.append(f"searcher: {spec.searcher.type}" + (
        f" ({spec.searcher.sampler}, {spec.searcher.num_samples} samples)" if spec.searcher.type == "optuna" else "")
        + f"; scheduler: {sched.type}" + (f" (grace {sched.grace_period}, max_t {sched.max_t}, "
                                          f"reduction {sched.reduction_factor:g})" if sched.type == "asha" else ""))
    objs = ", ".join(f"{o.metric} ({o.mode})" for o in objectives(spec))
    lines.append(f"objective(s): {objs}")
    for model, t in teachers.items():
        state = "given" if t.get("given") else ("cached" if t["cached"] else "to train once")
        lines.append(f"teacher {model}: {state} -> {t['checkpoint']}")
    if trials is not None:
        lines.append(f"{len(trials)} trial(s):")
        for i, t in enumerate(trials):
            lines.append(f"  {i + 1:3d}. {trial_name(t)}")
    else:
        lines.append("optuna space (define-by-run, file order; 'when' = conditional):")
        for k, d in spec.params.items():
            rng = d.get("choices") if d["type"] == "categorical" else f"[{d['low']}, {d['high']}]" + (" log" if d.get("log") else "")
            cond = f" when {d['when']}" if d.get("when") else ""
            lines.append(f"  {k}: {d['type']} {rng}{cond}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- ray
def init_ray(spec: SpaceSpec, address: str | None):
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"PGD_HOME": str(home()), "PYTHONUNBUFFERED": "1"}}
    if address:
        say(f"connecting to Ray at {address}")
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        n = spec.resources.num_cpus or os.cpu_count() or 1
        say(f"starting a local Ray cluster ({n} CPUs, dashboard on 127.0.0.1)")
        ray.init(address="local", num_cpus=n, include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env=env, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    return ray


def _tuner(spec, ctx, name, storage, param_space, conc, callbacks, role, num_samples=1, resources=None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from pgd.sweep.trial import trial_fn

    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, ctx=ctx),
        resources=tune.PlacementGroupFactory([{"CPU": (resources or spec.resources).trial_driver_cpus}]),
    )
    path = Path(storage) / name
    if tune.Tuner.can_restore(str(path)):  # the saved searcher, scheduler and callbacks come back
        say(f"restoring {role} tuner from {path} (finished trials are not rerun)")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    objs = objectives(spec)
    search_alg, scheduler = None, None
    metric = mode = None
    if len(objs) == 1:
        metric, mode = objs[0].metric, objs[0].mode
    if role == "trial" and spec.searcher.type == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from pgd.sweep.space import optuna_space

        seed = spec.searcher.seed
        if spec.searcher.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed)
        elif spec.searcher.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed)
        else:
            sampler = optuna.samplers.GridSampler(_optuna_grid(spec), seed=seed)
        storage_db = optuna.storages.RDBStorage(f"sqlite:///{Path(ctx.sweep_dir) / 'optuna.db'}")
        kwargs = dict(space=optuna_space(spec), sampler=sampler, storage=storage_db, study_name=ctx.name)
        if len(objs) > 1:
            kwargs.update(metric=[o.metric for o in objs], mode=[o.mode for o in objs])
        search_alg = OptunaSearch(**kwargs)
        num_samples = spec.searcher.num_samples
    if role == "trial" and spec.scheduler.type == "asha":
        epochs = int((spec.base.get("schedule") or {}).get("epochs", 12))
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.scheduler.max_t or epochs,
                                  grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    tune_config = tune.TuneConfig(metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
                                  num_samples=num_samples, max_concurrent_trials=conc.max_concurrent,
                                  reuse_actors=False)
    run_config = tune.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=0), verbose=1)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _optuna_grid(spec: SpaceSpec) -> dict:
    grid = {}
    for k, d in spec.params.items():
        if d["type"] != "categorical":
            raise ConfigError(f"sampler: grid needs categorical params; {k} is {d['type']}")
        grid[k] = d["choices"]
    return grid


# ---------------------------------------------------------------------------- main
def run_sweep(space_path: str, *, name: str | None = None, tracking_uri: str | None = None,
              address: str | None = None, resume: str = "auto", dry_run: bool = False) -> dict:
    """Run (or resume) a sweep; returns {sweep_dir, table, parent_run_id, ...}."""
    from pgd.sweep.trial import SweepContext

    spec, text = load_space(space_path)
    sweep_id = name or default_sweep_id(spec, text)
    trials = expand_grid(spec) if spec.searcher.type == "grid" else None
    teachers = teacher_plan(spec, needed_teachers(spec, trials))
    local_cpus = None if (address or os.environ.get("RAY_ADDRESS")) else float(spec.resources.num_cpus or os.cpu_count() or 1)
    try:
        conc = plan_concurrency(spec.resources, local_cpus, 0.0 if local_cpus else None)
    except ConfigError as exc:
        if not dry_run:
            raise
        conc = plan_concurrency(spec.resources, None, None)
        conc.reason = f"does not fit this machine ({exc}); run it on a cluster"
    if dry_run:
        print(describe_plan(spec, trials, teachers, conc))
        print(f"sweep id: {sweep_id} (folder {home() / 'sweeps' / sweep_id})")
        return {"dry_run": True, "trials": trials, "sweep_id": sweep_id}

    sweep_dir = home() / "sweeps" / sweep_id
    if resume == "never" and sweep_dir.exists():
        raise ConfigError(f"{sweep_dir} exists; pass --name to start another sweep or --resume to continue it")
    if resume == "always" and not sweep_dir.exists():
        raise ConfigError(f"nothing to resume: {sweep_dir} does not exist")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "space.yaml").write_text(text)
    from pgd.sweep.tracking import default_tracking_uri  # imports ray: not for dry runs

    tracking_uri = tracking_uri or default_tracking_uri()
    ray = init_ray(spec, address)
    try:
        cluster = ray.cluster_resources()
        conc = plan_concurrency(spec.resources, float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)))
        print(describe_plan(spec, trials, teachers, conc), flush=True)
        from pgd.sweep import tracking as T

        c = T.client(tracking_uri)
        artifact_root = str(home() / "mlartifacts") if tracking_uri.startswith("sqlite:") else None
        exp_id = T.ensure_experiment(c, spec.name, artifact_root)
        parent = T.parent_run(c, exp_id, sweep_id, space_text=text, space_name=spec.name,
                              project_dir=PROJECT_ROOT, extra_tags={"pgd.sweep_dir": str(sweep_dir)})
        say(f"MLflow: experiment '{spec.name}', parent run {parent} ({tracking_uri})")
        ckpts = {m: t["checkpoint"] for m, t in teachers.items()}
        ctx = SweepContext(name=sweep_id, sweep_dir=str(sweep_dir), home=str(home()),
                           space=to_dict(spec), teacher_checkpoints=ckpts)
        from pgd.sweep.describe import TrialDescriber

        describer = TrialDescriber(to_dict(spec), ckpts)
        _train_teachers(spec, ctx, teachers, conc, c, exp_id, parent, sweep_id, describer, tracking_uri)
        cb = T.MLflowSweepCallback(tracking_uri, exp_id, parent, sweep_id, describer, str(sweep_dir), role="trial")
        from ray import tune

        param_space = {"trial": tune.grid_search(trials)} if trials is not None else {}
        tuner = _tuner(spec, ctx, "trials", sweep_dir / "tune", param_space, conc, [cb], "trial")
        say("running trials")
        results = tuner.fit()
        n_err = sum(1 for r in results if r.error)
        say(f"trials finished: {len(results) - n_err} ok, {n_err} failed")
        for r in results:
            if r.error:
                say(f"  failed: {r.path} -> {str(r.error).splitlines()[0][:300] if str(r.error) else r.error!r}")
        from pgd.reporting.report import report_sweep

        out = report_sweep(tracking_uri, spec, sweep_id, parent_run_id=parent, out_dir=sweep_dir / "report")
        c.set_terminated(parent, status="FINISHED")
        out.update(sweep_dir=str(sweep_dir), parent_run_id=parent, tracking_uri=tracking_uri, failed=n_err)
        return out
    finally:
        ray.shutdown()


def _train_teachers(spec, ctx, teachers, conc, c, exp_id, parent, sweep_id, describer, tracking_uri):
    """Train the teachers the sweep needs and has not cached yet (in one Tune run, with the
    trial machinery), and record cached ones in MLflow once."""
    from ray import tune

    from pgd.sweep import tracking as T

    todo = {m: t for m, t in teachers.items() if not t["cached"]}
    for model, t in teachers.items():
        if t["cached"] and not t.get("given"):
            _record_cached_teacher(c, exp_id, parent, sweep_id, model, t, describer)
    if not todo:
        return
    say(f"training {len(todo)} teacher(s) once: {', '.join(todo)}")
    res = spec.teacher.resources or spec.resources
    if spec.teacher.resources is not None:
        conc = plan_concurrency(res, conc.cluster_cpus, conc.cluster_gpus)
    configs = [dict(_role="teacher", _run=t["run"], _teacher_dir=t["dir"], _hash=t["hash"], _resources=to_dict(res))
               for t in todo.values()]
    cb = T.MLflowSweepCallback(tracking_uri, exp_id, parent, sweep_id, describer, ctx.sweep_dir, role="teacher")
    tuner = _tuner(spec, ctx, "teachers", Path(ctx.sweep_dir) / "tune", {"trial": tune.grid_search(configs)},
                   conc, [cb], "teacher", resources=res)
    results = tuner.fit()
    missing = [m for m, t in todo.items() if not Path(t["checkpoint"]).is_file()]
    if missing:
        errors = "; ".join(str(r.error).splitlines()[0] for r in results if r.error)
        raise ConfigError(f"teacher training failed for {', '.join(missing)}: {errors or 'see the Ray logs'}")


def _record_cached_teacher(c, exp_id, parent, sweep_id, model, t, describer):
    from pgd.sweep import tracking as T

    tags = {T.TAG_SWEEP: sweep_id, T.TAG_ROLE: "teacher", "pgd.teacher_hash": t["hash"]}
    if T.find_run(c, exp_id, tags) is not None:
        return
    metrics = json.loads((Path(t["dir"]) / "metrics.json").read_text())
    name, params, resolved, extra = describer(dict(_role="teacher", _run=t["run"], _hash=t["hash"]))
    run = c.create_run(exp_id, run_name=name + " (cached)",
                       tags={**tags, T.TAG_PARENT: parent, T.TAG_TRIAL: f"teacher-{t['hash']}",
                             "pgd.cached": "true", "pgd.best_checkpoint": t["checkpoint"],
                             **{k: str(v) for k, v in extra.items()}})
    rid = run.info.run_id
    from mlflow.entities import Metric

    T.log_params(c, rid, params)
    now = int(time.time() * 1000)
    c.log_batch(rid, metrics=[Metric(k, float(v), now, int(metrics.get("epochs", 0)))
                              for k, v in metrics.items() if T.is_metric(k, v)])
    c.log_dict(rid, resolved, "resolved_config.yaml")
    c.set_terminated(rid, status="FINISHED")
