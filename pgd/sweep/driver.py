"""The sweep driver: plan -> teachers -> Tune -> report.

1. :func:`pgd.plan.build_plan` compiles the space file into a SweepPlan and checks everything
   checkable before Ray starts (``--dry-run`` stops here, printing and writing the plan).
2. Teachers the plan marks ``train`` are trained once (the same trial machinery, cached by
   config hash); cached ones are recorded in MLflow.
3. The trials run in Ray Tune; each Tune config is ``{"trial": TrialPlan}``.
4. The table is built from MLflow.

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

from pgd.errors import ConfigError
from pgd.paths import PROJECT_ROOT, RAY_JOB_ENV
from pgd.plan import SweepPlan, build_plan, describe
from pgd.plan.resources import plan_concurrency

log = logging.getLogger("pgd.sweep")

#: the job's runtime env, as Ray hands it to a job's driver process
JOB_CONFIG_ENV = RAY_JOB_ENV


def say(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- ray
def driver_runtime_env(wanted: dict[str, str], environ=None) -> dict:
    """The runtime env the driver passes to ``ray.init``: ``wanted`` env vars minus those the
    job's own runtime env already sets (inside ``ray job submit``). Ray refuses to merge a
    job's and a driver's runtime env that name the same variable, even with equal values."""
    environ = os.environ if environ is None else environ
    job_vars: dict = {}
    raw = environ.get(JOB_CONFIG_ENV)
    if raw:
        try:
            job_vars = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            job_vars = {}
    keep = {k: v for k, v in wanted.items() if k not in job_vars}
    return {"env_vars": keep} if keep else {}


def in_ray_job(environ=None) -> bool:
    return JOB_CONFIG_ENV in (os.environ if environ is None else environ)


def init_ray(plan: SweepPlan, address: str | None, verbose: bool = False):
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if in_ray_job() and not os.environ.get("PGD_HOME"):
        say(f"PGD_HOME is not set in the job's runtime env: using {plan.home} on this node; on a "
            "multi-node cluster set PGD_HOME to storage every node mounts")
    env = driver_runtime_env({"PGD_HOME": plan.home, "PYTHONUNBUFFERED": "1"})
    if address or in_ray_job():
        say(f"connecting to Ray at {address or 'the job cluster'}")
        ray.init(address=address or "auto", runtime_env=env or None, log_to_driver=verbose)
    else:
        n = plan.space.resources.num_cpus or os.cpu_count() or 1
        say(f"starting a local Ray cluster ({n} CPUs, dashboard on 127.0.0.1)")
        ray.init(address="local", num_cpus=n, include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env=env, log_to_driver=verbose, configure_logging=True, logging_level=logging.WARNING)
    return ray


def _tuner(plan: SweepPlan, ctx, name, param_space, conc, callbacks, role, resources):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from pgd.sweep.trial import trial_fn

    spec = plan.space
    from pgd.sweep.console import ConsoleCallback

    callbacks = [*callbacks, ConsoleCallback(plan.sweep_dir, role, conc.max_concurrent)]
    if resources.inline():  # the trial process trains: it holds the worker's share too
        bundle = {"CPU": resources.trial_cpus(), **({"GPU": resources.trial_gpus()} if resources.trial_gpus() else {})}
    else:  # the Tune function only drives a Ray Train worker group, which holds its own
        bundle = {"CPU": resources.trial_driver_cpus}
    trainable = tune.with_resources(tune.with_parameters(trial_fn, ctx=ctx),
                                    resources=tune.PlacementGroupFactory([bundle]))
    storage = Path(plan.sweep_dir) / "tune"
    path = storage / name
    if tune.Tuner.can_restore(str(path)):  # the saved searcher, scheduler and callbacks come back
        say(f"restoring {role} tuner from {path} (finished trials are not rerun)")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    objs = spec.all_objectives()
    search_alg = scheduler = metric = mode = None
    num_samples = 1
    if len(objs) == 1:
        metric, mode = objs[0].metric, objs[0].mode
    if role == "trial" and plan.optuna is not None:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from pgd.plan.optuna import optuna_grid, optuna_space

        seed = spec.searcher.seed
        if spec.searcher.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed)
        elif spec.searcher.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed)
        else:
            sampler = optuna.samplers.GridSampler(optuna_grid(plan), seed=seed)
        storage_db = optuna.storages.RDBStorage(f"sqlite:///{Path(plan.sweep_dir) / 'optuna.db'}")
        kwargs = dict(space=optuna_space(plan), sampler=sampler, storage=storage_db, study_name=plan.sweep_id)
        if len(objs) > 1:
            kwargs.update(metric=[o.metric for o in objs], mode=[o.mode for o in objs])
        search_alg = OptunaSearch(**kwargs)
        num_samples = spec.searcher.num_samples
    if role == "trial" and spec.scheduler.type == "asha":
        epochs = (plan.trials[0].run if plan.trials else plan.optuna.base.run).schedule.epochs
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.scheduler.max_t or epochs,
                                  grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    tune_config = tune.TuneConfig(metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
                                  num_samples=num_samples, max_concurrent_trials=conc.max_concurrent,
                                  reuse_actors=False)
    run_config = tune.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=0), verbose=0,
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


# ---------------------------------------------------------------------------- main
def run_sweep(space_path: str, *, name: str | None = None, tracking_uri: str | None = None,
              address: str | None = None, resume: str = "auto", dry_run: bool = False,
              verbose: bool = False) -> dict:
    """Run (or resume) a sweep; returns {sweep_dir, table, parent_run_id, plan, ...}.

    ``resume``: ``auto`` (resume the sweep of this space file when it exists, else start it),
    ``always`` (there must be one to resume), ``never`` (there must be none). ``verbose``: the
    workers' output (mmengine logs) on the console too, not only in ``<sweep>/logs``."""
    plan = build_plan(space_path, name=name, tracking_uri=tracking_uri)
    remote = bool(address or os.environ.get("RAY_ADDRESS") or in_ray_job())
    local_cpus = None if remote else float(plan.space.resources.num_cpus or os.cpu_count() or 1)
    try:
        conc = plan_concurrency(plan.space.resources, local_cpus, None if remote else 0.0)
    except ConfigError as exc:
        if not dry_run:
            raise
        conc = plan_concurrency(plan.space.resources, None, None)
        conc.reason = f"does not fit this machine ({exc}); run it on a cluster"
    sweep_dir = Path(plan.sweep_dir)
    if dry_run:
        print(describe(plan, conc))
        print(f"plan written to {plan.write()}")
        return {"dry_run": True, "plan": plan, "sweep_id": plan.sweep_id}

    started = (sweep_dir / "tune").is_dir()
    if resume == "never" and started:
        raise ConfigError(f"{sweep_dir} holds a sweep; pass --name to start another or --resume to continue it")
    if resume == "always" and not started:
        raise ConfigError(f"nothing to resume: {sweep_dir} holds no started sweep")
    if started:
        _check_same_record(plan, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "space.yaml").write_text(Path(space_path).read_text())
    plan.write()
    ray = init_ray(plan, address, verbose)
    try:
        cluster = ray.cluster_resources()
        conc = plan_concurrency(plan.space.resources, float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)))
        print(describe(plan, conc), flush=True)
        from pgd.sweep import tracking as T
        from pgd.sweep.trial import SweepContext

        uri = plan.tracking_uri
        c = T.client(uri)
        artifact_root = str(Path(plan.home) / "mlartifacts") if uri.startswith("sqlite:") else None
        exp_id = T.ensure_experiment(c, plan.space.name, artifact_root)
        parent = T.parent_run(c, exp_id, plan.sweep_id, space_text=Path(space_path).read_text(),
                              space_name=plan.space.name, project_dir=PROJECT_ROOT,
                              extra_tags={"pgd.sweep_dir": str(sweep_dir)})
        from pgd.reporting import mlflow_ui as UI

        UI.tag_experiment(c, exp_id, note=UI.experiment_note(
            plan.space.description, UI.invocation(space_path), sweep_dir / "report", plan.sweep_id))
        c.log_artifact(parent, str(sweep_dir / "plan.yaml"))
        say(f"MLflow: experiment '{plan.space.name}', parent run {parent} ({uri})")
        ctx = SweepContext(name=plan.sweep_id, sweep_dir=str(sweep_dir), home=plan.home, verbose=verbose,
                           tracking=dict(uri=uri, experiment_id=exp_id, sweep_id=plan.sweep_id))
        if not verbose:
            from pgd.sweep.console import log_dir

            say(f"worker logs: {log_dir(sweep_dir)}/<trial>.log (--verbose to see them here)")
        _train_teachers(plan, ctx, conc, c, exp_id, parent)
        teacher_ap = _teacher_quality(plan, c, exp_id, parent)
        from ray import tune

        cb = T.MLflowSweepCallback(uri, exp_id, parent, plan.sweep_id, role="trial", teacher_ap=teacher_ap,
                                   commit=T.git_commit(PROJECT_ROOT))
        param_space = {"trial": tune.grid_search([t.dump() for t in plan.trials])} if plan.trials else {}
        tuner = _tuner(plan, ctx, "trials", param_space, conc, [cb], "trial", plan.space.resources)
        say("running trials")
        results = tuner.fit()
        n_err = sum(1 for r in results if r.error)
        say(f"trials finished: {len(results) - n_err} ok, {n_err} failed")
        for r in results:
            if r.error:
                say(f"  failed: {r.path} -> {str(r.error).splitlines()[0][:300] if str(r.error) else r.error!r}")
        from pgd.reporting.report import report_sweep

        out = report_sweep(uri, plan.space, plan.sweep_id, parent_run_id=parent, out_dir=sweep_dir / "report")
        from pgd.sweep.analysis import trial_quality_maps

        trial_quality_maps(plan, out["runs"], uri, say=say)
        if plan.space.analysis:
            from pgd.sweep.analysis import run_sweep_analyses

            out["analysis"] = run_sweep_analyses(plan, out["runs"], parent, say=say)
        c.set_terminated(parent, status="FINISHED")
        out.update(sweep_dir=str(sweep_dir), parent_run_id=parent, tracking_uri=uri, failed=n_err, plan=plan)
        return out
    finally:
        ray.shutdown()


def _check_same_record(plan: SweepPlan, sweep_dir: Path) -> None:
    """A resumed sweep keeps its MLflow record: Tune restores the trial callbacks with the
    tracking URI, experiment and parent run they were created with, so resuming against
    another tracking store would split the record between two stores."""
    import yaml

    try:
        before = (yaml.safe_load((sweep_dir / "plan.yaml").read_text()) or {}).get("tracking_uri")
    except (OSError, yaml.YAMLError):
        return
    if before and before != plan.tracking_uri:
        raise ConfigError(
            f"{sweep_dir} holds a sweep recorded in MLflow at {before}, but this run would record at "
            f"{plan.tracking_uri}: resume it with MLFLOW_TRACKING_URI={before} (or --tracking-uri), "
            f"or start a new sweep with --fresh (or --name)")


def _train_teachers(plan: SweepPlan, ctx, conc, c, exp_id, parent):
    """Train the teachers the plan marks ``train`` (in one Tune run, with the trial
    machinery), and record cached ones in MLflow once."""
    from ray import tune

    from pgd.sweep import tracking as T

    todo = [t for t in plan.teachers if t.source == "train"]
    for t in plan.teachers:
        if t.source == "cached":
            _record_cached_teacher(c, exp_id, parent, plan.sweep_id, t)
    if not todo:
        return
    say(f"training {len(todo)} teacher(s) once: {', '.join(t.model for t in todo)}")
    res = plan.space.teacher.resources or plan.space.resources
    if plan.space.teacher.resources is not None:
        conc = plan_concurrency(res, conc.cluster_cpus, conc.cluster_gpus)
    cb = T.MLflowSweepCallback(plan.tracking_uri, exp_id, parent, plan.sweep_id, role="teacher",
                               commit=T.git_commit(PROJECT_ROOT))
    tuner = _tuner(plan, ctx, "teachers", {"trial": tune.grid_search([t.trial.dump() for t in todo])},
                   conc, [cb], "teacher", res)
    results = tuner.fit()
    missing = [t.model for t in todo if not Path(t.checkpoint).is_file()]
    if missing:
        errors = "; ".join(str(r.error).splitlines()[0] for r in results if r.error)
        raise ConfigError(f"teacher training failed for {', '.join(missing)}: {errors or 'see the Ray logs'}")


def _evaluate_teacher(run: dict, checkpoint: str, home: str) -> dict:
    """Runs as a Ray task with the trial resources: the val metrics of a given teacher."""
    os.environ["PGD_HOME"] = home
    from pgd.training.trainer import evaluate

    return evaluate(run, checkpoint)


def _teacher_quality(plan: SweepPlan, c, exp_id, parent) -> dict:
    """Every teacher's val metrics, known before its students start: a trained teacher's from
    its training (cached with it), a given checkpoint's evaluated once (a Ray task with the
    trial resources, cached under ``cache/teachers/given-<model>-<sha>``) and recorded as a
    teacher run, so the table has its row. The AP goes to the parent run
    (``teacher_AP.<model>``) and to every child run that distils from it (``teacher_AP``).
    Returns ``{teacher hash: AP}``."""
    import ray

    from pgd.sweep import tracking as T

    out = {}
    for t in plan.teachers:
        if t.source == "given":
            cache = Path(plan.home) / "cache" / "teachers" / f"given-{t.model}-{t.hash}" / "metrics.json"
            if cache.is_file():
                metrics = json.loads(cache.read_text())
            else:
                res = plan.space.teacher.resources or plan.space.resources
                say(f"evaluating the given teacher {t.model} once on the val split")
                task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker)(_evaluate_teacher)
                metrics = ray.get(task.remote(plan.teacher_run(t.model).dump(), t.checkpoint, plan.home))
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(metrics, indent=2))
            _record_given_teacher(c, exp_id, parent, plan, t, metrics)
        else:
            metrics = json.loads((Path(t.dir) / "metrics.json").read_text())
        ap = metrics.get("AP")
        if ap is not None:
            out[t.hash] = float(ap)
            c.log_metric(parent, f"{T.TEACHER_AP}.{t.model}", float(ap))
            say(f"teacher {t.model}: AP {float(ap):.1f} on the val split")
    return out


def _record_given_teacher(c, exp_id, parent, plan, teacher, metrics):
    from mlflow.entities import Metric

    from pgd.sweep import tracking as T

    key = f"teacher-{teacher.model}-{teacher.hash}"
    tags = {T.TAG_SWEEP: plan.sweep_id, T.TAG_ROLE: "teacher", T.TAG_TRIAL: key}
    if T.find_run(c, exp_id, tags) is not None:
        return
    run = plan.teacher_run(teacher.model)
    from pgd.sweep.tracking import flatten

    run_ = c.create_run(exp_id, run_name=f"teacher {teacher.model} (given)",
                        tags={**tags, T.TAG_PARENT: parent, "pgd.method": "teacher", "pgd.model": teacher.model,
                              "pgd.teacher_hash": teacher.hash, "pgd.given": "true",
                              "pgd.best_checkpoint": teacher.checkpoint, **_source_tags()})
    rid = run_.info.run_id
    T.log_params(c, rid, {k: v for k, v in flatten(run.dump()).items() if k != "work_dir"})
    now = int(time.time() * 1000)
    c.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if T.is_metric(k, v)])
    c.log_dict(rid, run.dump(), "resolved_config.yaml")
    T.log_dataset_inputs(c, rid, run)
    c.set_tag(rid, T.TAG_LOGGED, "1")
    c.set_terminated(rid, status="FINISHED")


def _source_tags() -> dict:
    from pgd.reporting.mlflow_ui import source_tags
    from pgd.sweep.tracking import git_commit

    return source_tags(git_commit(PROJECT_ROOT))


def _record_cached_teacher(c, exp_id, parent, sweep_id, teacher):
    from mlflow.entities import Metric

    from pgd.sweep import tracking as T

    tags = {T.TAG_SWEEP: sweep_id, T.TAG_ROLE: "teacher", T.TAG_TRIAL: teacher.trial.key}
    if T.find_run(c, exp_id, tags) is not None:
        return
    metrics = json.loads((Path(teacher.dir) / "metrics.json").read_text())
    name, params, resolved, extra = T.describe_trial(teacher.trial)
    run = c.create_run(exp_id, run_name=name + " (cached)",
                       tags={**tags, T.TAG_PARENT: parent, "pgd.cached": "true",
                             "pgd.best_checkpoint": teacher.checkpoint, **_source_tags(),
                             **{k: str(v) for k, v in extra.items()}})
    rid = run.info.run_id
    T.log_params(c, rid, params)
    now = int(time.time() * 1000)
    c.log_batch(rid, metrics=[Metric(k, float(v), now, int(metrics.get("epochs", 0)))
                              for k, v in metrics.items() if T.is_metric(k, v)])
    c.log_dict(rid, resolved, "resolved_config.yaml")
    T.log_dataset_inputs(c, rid, teacher.trial.run)
    c.set_tag(rid, T.TAG_LOGGED, "1")
    c.set_terminated(rid, status="FINISHED")
