"""Train (or distil) and evaluate one run with mmengine's Runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from pgd.configs import to_dict
from pgd.paths import resolve
from pgd.training.build import build_config
from pgd.training.data import resolve_data
from pgd.training.runconfig import RunConfig, run_config


def _summary_hook(runner):
    from pgd.integration.hooks import EpochSummaryHook

    return next(h for h in runner.hooks if isinstance(h, EpochSummaryHook))


def build_runner(run: RunConfig | dict, *, launcher: str = "none", world_size: int = 1,
                 extra_hooks: list | None = None, resume_from: str | None = None):
    """An mmengine Runner for ``run``: resumed from ``resume_from`` when given, else from
    its work_dir's last checkpoint when ``run.resume`` and there is one."""
    from mmengine.runner import Runner, find_latest_checkpoint

    import pgd.integration  # noqa: F401  (registers our modules, applies compat fixes)

    run = run if isinstance(run, RunConfig) else run_config(run)
    files = resolve_data(run.data)
    cfg = build_config(run, world_size=world_size, launcher=launcher, files=files,
                       extra_hooks=extra_hooks)
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    latest = resume_from or (find_latest_checkpoint(str(work_dir)) if run.resume else None)
    cfg.resume = bool(latest)
    if resume_from:
        cfg.load_from = str(resume_from)
    if _is_rank0():
        (work_dir / "run_config.yaml").write_text(yaml.safe_dump(to_dict(run), sort_keys=False))
        cfg.dump(str(work_dir / "mmengine_config.py"))
    runner = Runner.from_cfg(cfg)
    if latest:
        runner.logger.info(f"resuming from {latest}")
    return runner


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(run: RunConfig | dict, *, launcher: str = "none", world_size: int = 1,
          extra_hooks: list | None = None, resume_from: str | None = None) -> dict:
    """Train ``run`` to the end of its schedule and evaluate it.

    Returns ``{"AP", "AP50", "AP75", "APS", "APM", "APL"}`` on the 0-100 scale plus
    ``epochs``, the last epoch's mean losses (``train/<term>``) and ``best_checkpoint``; the
    same is written to ``<work_dir>/metrics.json``.
    """
    run = run if isinstance(run, RunConfig) else run_config(run)
    runner = build_runner(run, launcher=launcher, world_size=world_size, extra_hooks=extra_hooks,
                          resume_from=resume_from)
    runner.train()
    summary = _summary_hook(runner)
    # a run resumed after its last epoch trains nothing: evaluate its weights explicitly
    metrics = summary.last_metrics or runner.val_loop.run()
    result = _result(runner, metrics, summary)
    if run.latency_images > 0 and _is_rank0():
        from pgd.integration.hooks import measure_once

        result["latency_ms"] = measure_once(runner, run.latency_images)  # LatencyHook's value
    if _is_rank0():
        Path(runner.work_dir, "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def evaluate(run: RunConfig | dict, checkpoint: str) -> dict:
    """Evaluate a checkpoint of ``run``'s model on ``run``'s val split."""
    from mmengine.runner import Runner

    import pgd.integration  # noqa: F401

    run = run if isinstance(run, RunConfig) else run_config(run)
    cfg = build_config(run)
    cfg.load_from = str(resolve(checkpoint))
    cfg.resume = False
    runner = Runner.from_cfg(cfg)
    metrics = runner.val()
    return {k.split("/")[-1]: float(v) for k, v in metrics.items()}


def _result(runner, metrics: dict, summary) -> dict:
    out = {k.split("/")[-1]: float(v) for k, v in (metrics or {}).items()}
    out["epochs"] = runner.epoch
    out.update({f"train/{k}": v for k, v in summary.last_losses.items()})
    ckpt_hook = next((h for h in runner.hooks if type(h).__name__ == "CheckpointHook"), None)
    best = getattr(ckpt_hook, "best_ckpt_path", None) if ckpt_hook else None
    out["best_checkpoint"] = best
    return out
