"""One trial: a thin Tune function that runs a Ray Train ``TorchTrainer`` (Train V2; a
trainer cannot be handed to ``Tuner`` on Ray 2.60), whose workers run the platform's training
pipeline under DDP (gloo on CPU, nccl on GPU).

The Tune config of a trial is ``{"trial": TrialPlan}`` (grid and Optuna trials alike): the
resolved run it trains, its resources and its role. Nothing here derives a run from the space.
Metrics flow worker -> ``ray.train.report`` -> ``TuneReportCallback`` -> Tune. The Train run is
named after the trial's plan key under ``<sweep>/train``: a trial restarted with the same
storage path and name resumes from its last reported checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pgd.config.loading import validate
from pgd.plan.plan import TrialPlan


@dataclass
class SweepContext:
    """What every trial of a sweep needs besides its own plan (picklable)."""

    name: str
    sweep_dir: str  # absolute
    home: str  # absolute PGD_HOME for the workers
    tracking: dict | None = None  # {uri, experiment_id, sweep_id}: where workers sample system metrics
    verbose: bool = False  # False: every trial process writes to <sweep>/logs/<key>*.log


def _short_reason(exc: BaseException) -> str:
    """The most useful line of a Train failure: our own error when there is one."""
    text = str(exc)
    for pattern in (r"(DivergenceError: [^\n]+)", r"((?:ConfigError|AnnotationError): [^\n]+)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errs = [ln.strip() for ln in lines if re.match(r"^\s*\w+(Error|Exception)\b", ln)]
    return (errs[-1] if errs else (lines[-1] if lines else type(exc).__name__))[:500]


class TrialFailed(RuntimeError):
    """A trial's training failed; the message is the reason, recorded in MLflow."""


def trial_plan(config: dict) -> TrialPlan:
    """The TrialPlan of a Tune config (``{"trial": ...}``; Optuna adds its own flat keys)."""
    return validate(TrialPlan, config["trial"], "Tune trial config", "trial")


def trial_fn(config: dict, ctx: SweepContext) -> None:
    """The Tune trainable (function API): one worker trains here, several under Ray Train."""
    trial = trial_plan(config)
    if trial.resources.inline():  # no Ray Train controller or worker group (docs/performance.md)
        if not ctx.verbose:
            from pgd.sweep.console import redirect_output

            redirect_output(ctx.sweep_dir, f"{trial.key}-rank0")
        train_inline(trial, ctx)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    if not ctx.verbose:
        from pgd.sweep.console import redirect_output

        redirect_output(ctx.sweep_dir, f"{trial.key}-tune")
    run_trial(trial, ctx, callbacks=[TuneReportCallback()])


def run_trial(trial: TrialPlan, ctx: SweepContext, callbacks: list | None = None) -> None:
    """Train one planned trial with Ray Train (also callable without Tune)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pgd.sweep.watchdog import (
        START_TIMEOUT_ENV,
        ControllerStatusCallback,
        fit_with_watchdog,
        status_path,
    )

    res = trial.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    # Ray Train reads the worker-group start-up timeout from the env of the process that calls
    # fit() and passes it on to its controller
    os.environ[START_TIMEOUT_ENV] = f"{res.start_timeout_s:g}"
    status_file = status_path(ctx.sweep_dir, trial.key)
    status_file.unlink(missing_ok=True)
    status_cb = ControllerStatusCallback(str(status_file), res.workers_per_trial, per_worker)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=dict(trial=trial.dump(), home=ctx.home, sweep_dir=ctx.sweep_dir, verbose=ctx.verbose,
                               tracking=ctx.tracking),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_trial, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=trial.key,
            storage_path=str(Path(ctx.sweep_dir) / "train"),
            callbacks=[*(callbacks or []), status_cb],
            # no retry of a worker group that did not start: the timeout above is the wait
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        fit_with_watchdog(trainer.fit, status_file, res.start_timeout_s)
    except Exception as exc:  # noqa: BLE001 - re-raised with the reason Tune and MLflow record
        reason = _short_reason(exc)
        if "startup timed out" in reason:  # say what it waited for, and our key, not Ray's env var
            reason = (reason.split(" Potential causes")[0].rstrip(".") + f" ({res.workers_per_trial} worker(s) x "
                      + ", ".join(f"{k} {v:g}" for k, v in per_worker.items())
                      + "): the cluster did not free these in time; raise resources.start_timeout_s to wait longer")
        raise TrialFailed(reason) from None


def train_worker(cfg: dict) -> None:
    """Runs in every Ray Train worker: the platform's training pipeline, reporting to Ray."""
    import ray.train

    trial = TrialPlan.model_validate(cfg["trial"])
    ctx = ray.train.get_context()
    if not cfg.get("verbose", True):
        from pgd.sweep.console import redirect_output

        redirect_output(cfg["sweep_dir"], f"{trial.key}-rank{ctx.get_world_rank()}")
    world = ctx.get_world_size()
    _train_and_report(trial, cfg["home"], cfg.get("tracking"), rank=ctx.get_world_rank(), world=world,
                      sample_system=ctx.get_local_rank() == 0,
                      node_tag=None if ctx.get_local_world_size() == world else f"node{ctx.get_node_rank()}",
                      checkpoint=ray.train.get_checkpoint(), report=ray.train.report)


def train_inline(trial: TrialPlan, ctx: SweepContext) -> None:
    """A one-worker trial in its Tune trial process: the same pipeline as ``train_worker``,
    reporting to Tune directly (``ray.tune.report``; the checkpoints and the resume are Tune's)."""
    from ray import tune

    from pgd.sweep import ray_hook

    ray_hook.use_tune_session()
    _train_and_report(trial, ctx.home, ctx.tracking, rank=0, world=1, sample_system=True, node_tag=None,
                      checkpoint=tune.get_checkpoint(), report=tune.report)


def _train_and_report(trial: TrialPlan, home: str, tracking: dict | None, *, rank: int, world: int,
                      sample_system: bool, node_tag: str | None, checkpoint, report) -> None:
    """Train ``trial`` (resuming from ``checkpoint`` when given) and send the closing report."""
    import ray
    import torch

    os.environ["PGD_HOME"] = home
    threads = max(1, round(trial.resources.cpus_per_worker))  # Ray's CPUs are logical: match them
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if torch.cuda.is_available():
        if world > 1:
            import ray.train.torch

            torch.cuda.set_device(ray.train.torch.get_device())
        else:  # the trial process sees only the GPU(s) Ray gave it
            torch.cuda.set_device(0)
    import pgd.sweep.ray_hook  # noqa: F401  (registers RayReportHook)
    from pgd.training.trainer import train

    run = trial.run
    work_dir = Path(run.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    resume_from = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            src = Path(d) / "checkpoint.pth"
            if src.is_file():
                resume_from = str(work_dir / f"ray_resume_rank{rank}.pth")
                shutil.copy2(src, resume_from)
    from pgd.sweep.system_metrics import trial_system_metrics

    sampler = trial_system_metrics(tracking if sample_system else None, trial.key, node_id=node_tag)
    with sampler:  # MLflow system metrics into the trial's run (pgd/sweep/system_metrics.py)
        result = train(run, launcher="pytorch" if world > 1 else "none", world_size=world,
                       extra_hooks=[dict(type="RayReportHook")], resume_from=resume_from)
    final = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    final["epoch"] = int(result.get("epochs", 0))
    final["final"] = 1  # the closing report: final metrics (+ latency)
    final["best_checkpoint"] = str(result.get("best_checkpoint") or "")
    final["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    final["world_size"] = world
    final["node_id"] = ray.get_runtime_context().get_node_id()  # where rank 0 trained (MLflow tag)
    if rank == 0 and trial.publish_dir:
        _publish_teacher(result, work_dir, Path(trial.publish_dir))
    report(final)


def _publish_teacher(result: dict, work_dir: Path, out: Path) -> None:
    """Copy the teacher's best checkpoint + metrics into the teacher cache, atomically."""
    best = result.get("best_checkpoint") or str(sorted(work_dir.glob("epoch_*.pth"))[-1])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(best, tmp / "teacher.pth")
    shutil.copy2(work_dir / "run_config.yaml", tmp / "run_config.yaml")
    (tmp / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
