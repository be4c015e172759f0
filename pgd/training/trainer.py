"""Train (or distil) and evaluate one run with mmengine's Runner.

Everything that can be wrong with a run's inputs is checked by :func:`prepare_run` before a
Runner exists (errors come first, not after hundreds of lines of mmengine set-up): the config
(parsed and resolved), the data (generated or found; annotations validated), the weights
(backbone, ``load_from``, the teacher: each a real checkpoint of the right model), and the
work dir (a work dir holding another run is never resumed from nor silently overwritten).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from pgd.config.run import RunConfig, changed_keys, parse_run, resolve_run
from pgd.errors import ConfigError
from pgd.training.build import build_config
from pgd.training.data import DataFiles, resolve_data

#: files of a run in its work dir (what --overwrite removes before starting over)
RUN_FILES = ("run_config.yaml", "mmengine_config.py", "metrics.json", "metrics.jsonl", "last_checkpoint")
RUN_GLOBS = ("epoch_*.pth", "best_*.pth", "ray_resume_rank*.pth")
#: keys a resumed run may change: extending (or re-timing) the schedule of the same training
RESUMABLE_CHANGES = frozenset({"schedule.epochs", "schedule.lr_steps", "schedule.val_interval",
                               "schedule.checkpoint_interval", "schedule.max_keep_ckpts",
                               "schedule.log_interval", "schedule.num_workers", "device"})


def _summary_hook(runner):
    from pgd.integration.hooks import EpochSummaryHook

    return next(h for h in runner.hooks if isinstance(h, EpochSummaryHook))


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------- checks
def check_weights(run: RunConfig, files: DataFiles) -> None:
    """Backbone weights, ``load_from`` and the teacher are real checkpoints of their models."""
    from pgd.detectors import model_config
    from pgd.detectors.mobilenet import MBV2_URI
    from pgd.integration.checkpoints import (
        check_backbone_checkpoint,
        check_detector_checkpoint,
        load_state,
    )

    if run.backbone_checkpoint:
        from pgd.paths import check_local_file

        check_local_file(run.backbone_checkpoint, "backbone_checkpoint")
    if run.backbone_checkpoint or run.backbone == "mbv2":
        cfg = model_config(run.model, len(files.classes), backbone_checkpoint=run.backbone_checkpoint)
        check_backbone_checkpoint(run.backbone_checkpoint or MBV2_URI, cfg)
    d = run.distill
    if d is not None and d.teacher_checkpoint and d.teacher_config is None:
        check_detector_checkpoint(d.teacher_checkpoint, model_config(d.teacher, len(files.classes)),
                                  what=f"distill.teacher_checkpoint (teacher {d.teacher})")
    if run.load_from:
        load_state(run.load_from, "load_from")


def validate_data(run: RunConfig, files: DataFiles) -> None:
    """Both splits' annotations (and image files, per ``data.check_images``), before training."""
    from pgd.data.validate import validate_coco

    for ann, img in ((files.train_ann, files.train_img), (files.val_ann, files.val_img)):
        validate_coco(ann, img, check_images=run.data.check_images, allow_outside=run.data.allow_outside)


def prepare_run(run: RunConfig | dict, *, overwrite: bool = False, source: str = "run config"
                ) -> tuple[RunConfig, DataFiles]:
    """(resolved run, its data files) with every input checked; ``overwrite`` allows
    replacing a shapes data set made with other parameters."""
    run = resolve_run(parse_run(run, source))
    files = resolve_data(run.data, overwrite=overwrite)
    validate_data(run, files)
    check_weights(run, files)
    return run, files


def guard_work_dir(run: RunConfig, *, overwrite: bool = False) -> bool:
    """Whether to resume from ``run.work_dir``. A work dir holding a run of another config
    (other than extending its schedule: :data:`RESUMABLE_CHANGES`) is an error (it would resume that run's weights, or overwrite its results) unless
    ``overwrite``, which removes that run's files first; so is ``resume: false`` over existing
    checkpoints of the same run."""
    from mmengine.runner import find_latest_checkpoint

    wd = Path(run.work_dir)
    stored = wd / "run_config.yaml"
    latest = find_latest_checkpoint(str(wd)) if wd.is_dir() else None
    has_run = stored.is_file() or latest is not None or (wd / "metrics.json").is_file()
    if not has_run:
        return False
    why = None
    try:
        old = resolve_run(parse_run(yaml.safe_load(stored.read_text()), str(stored)))
        keys = [k for k in changed_keys(_model_part(old), _model_part(run)) if k not in RESUMABLE_CHANGES]
        if keys:
            why = "a run of another config (" + ", ".join(
                f"{k}: {_get(old.dump(), k)!r} -> {_get(run.dump(), k)!r}" for k in keys[:6]) + ")"
    except (OSError, ConfigError, yaml.YAMLError, AttributeError, TypeError) as exc:
        why = f"a run whose config cannot be read ({str(exc).splitlines()[0][:200]})"
    if why is None and (run.resume or latest is None):
        return run.resume and latest is not None
    if not overwrite:
        if why is not None:
            raise ConfigError(f"work_dir {wd} holds {why}; resuming would continue that run and starting "
                              "over would overwrite it. Choose another work_dir, or pass --overwrite "
                              "(overwrite=True) to delete it and start over")
        raise ConfigError(f"work_dir {wd} holds checkpoints of this run and resume is off; starting over "
                          "would overwrite them. Pass --overwrite too, or choose another work_dir")
    if _is_rank0():
        for name in RUN_FILES:
            (wd / name).unlink(missing_ok=True)
        for pattern in RUN_GLOBS:
            for p in wd.glob(pattern):
                p.unlink()
    return False


def _model_part(run: RunConfig) -> dict:
    d = run.dump()
    for k in ("work_dir", "resume", "latency_images"):
        d.pop(k, None)
    return d


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


# ----------------------------------------------------------------------------- runs
def build_runner(run: RunConfig | dict, *, launcher: str = "none", world_size: int = 1,
                 extra_hooks: list | None = None, resume_from: str | None = None,
                 overwrite: bool = False):
    """An mmengine Runner for ``run`` (checked by :func:`prepare_run` first): resumed from
    ``resume_from`` when given, else from its work_dir's last checkpoint when ``run.resume``
    and the work dir holds this same run (see :func:`guard_work_dir`)."""
    from mmengine.runner import Runner, find_latest_checkpoint

    import pgd.integration  # noqa: F401  (registers our modules, applies compat fixes)

    run, files = prepare_run(run, overwrite=overwrite)
    resume = guard_work_dir(run, overwrite=overwrite)
    cfg = build_config(run, world_size=world_size, launcher=launcher, files=files, extra_hooks=extra_hooks)
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    latest = resume_from or (find_latest_checkpoint(str(work_dir)) if resume else None)
    cfg.resume = bool(latest)
    if resume_from:
        cfg.load_from = str(resume_from)
    if _is_rank0():
        (work_dir / "run_config.yaml").write_text(yaml.safe_dump(run.dump(), sort_keys=False))
        cfg.dump(str(work_dir / "mmengine_config.py"))
    runner = Runner.from_cfg(cfg)
    if latest:
        runner.logger.info(f"resuming from {latest}")
    return runner


def train(run: RunConfig | dict, *, launcher: str = "none", world_size: int = 1,
          extra_hooks: list | None = None, resume_from: str | None = None, overwrite: bool = False) -> dict:
    """Train ``run`` to the end of its schedule and evaluate it.

    Returns ``{"AP", "AP50", "AP75", "APS", "APM", "APL"}`` on the 0-100 scale plus
    ``epochs``, the last epoch's mean losses (``train/<term>``) and ``best_checkpoint``; the
    same is written to ``<work_dir>/metrics.json``.
    """
    runner = build_runner(run, launcher=launcher, world_size=world_size, extra_hooks=extra_hooks,
                          resume_from=resume_from, overwrite=overwrite)
    run = resolve_run(parse_run(run))
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
    """Evaluate a checkpoint of ``run``'s model on ``run``'s val split (nothing is trained and
    no checkpoint is written). The checkpoint must fit the run's model exactly."""
    from mmdet.registry import MODELS
    from mmengine.runner import Runner

    import pgd.integration
    from pgd.integration.checkpoints import compare_state, load_state, mismatch_message

    pgd.integration.init_scope()
    run, files = prepare_run(run)
    cfg = build_config(run, files=files)
    model = MODELS.build(cfg.model)
    missing, unexpected, shapes = compare_state(model.state_dict(), load_state(checkpoint, "--eval-only checkpoint"))
    if missing or unexpected or shapes:
        raise ConfigError(mismatch_message(f"checkpoint for {run.model}", checkpoint, missing, unexpected, shapes))
    del model
    cfg.load_from = checkpoint
    cfg.resume = False
    cfg.default_hooks.checkpoint = None  # evaluation saves no (best) checkpoint
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
