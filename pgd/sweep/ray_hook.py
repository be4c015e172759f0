"""mmengine hook that reports each evaluation to Ray Train (-> Tune), with a checkpoint."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

CHECKPOINT_FILE = "checkpoint.pth"
_SESSION = {"tune": False}  # True in a one-worker trial that trains in its Tune process


def use_tune_session() -> None:
    """Report to Tune directly (``ray.tune.report``): the trial trains in its Tune process."""
    _SESSION["tune"] = True


def _rank() -> int:
    if _SESSION["tune"]:
        return 0
    import ray.train

    return ray.train.get_context().get_world_rank()


def _report(metrics: dict, checkpoint_dir: str | None = None, name: str | None = None) -> None:
    if _SESSION["tune"]:
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)
        return
    import ray.train

    if checkpoint_dir:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
                         checkpoint_dir_name=name)
    else:
        ray.train.report(metrics)


@HOOKS.register_module()
class RayReportHook(Hook):
    """After every evaluation, every rank calls ``ray.train.report`` (a barrier; ``ray.tune.report``
    when the trial trains in its Tune process) with the
    epoch, the COCO metrics and the epoch's mean losses; rank 0 attaches the epoch's
    mmengine checkpoint (model, optimizer, schedulers, message hub) so that a restarted
    trial resumes from it."""

    priority = "LOWEST"  # after the checkpoint hook saved this epoch

    def __init__(self, extra_files: tuple = ("run_config.yaml", "metrics.jsonl")):
        self.extra_files = extra_files

    def after_val_epoch(self, runner, metrics=None):
        from pgd.distill.health import MaskHealthHook
        from pgd.integration.hooks import LATENCY_INFO, EpochSummaryHook

        summary = next((h for h in runner.hooks if isinstance(h, EpochSummaryHook)), None)
        epoch = summary.epochs_done if summary else runner.epoch
        report = {"epoch": int(epoch)}
        report.update({k.split("/")[-1]: float(v) for k, v in (metrics or {}).items()})
        if summary:
            report.update({f"train/{k}": float(v) for k, v in summary.last_losses.items()})
        report.update(MaskHealthHook.report(runner))  # mask health + inheritance (docs/health.md)
        rank0 = _rank() == 0
        from pgd.distill.diagnostics import DIAGNOSTICS_INFO

        report.update(runner.message_hub.get_info(DIAGNOSTICS_INFO) or {})  # kd/<name>, KD runs
        latency = runner.message_hub.get_info(LATENCY_INFO)  # LatencyHook ran before this hook
        if latency is not None:
            report["latency_ms"] = float(latency)  # Tune wants every objective in every report
        ckpt_file = Path(runner.work_dir) / f"epoch_{epoch}.pth"
        if rank0 and ckpt_file.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                _link_or_copy(ckpt_file, Path(tmp) / CHECKPOINT_FILE)
                for name in self.extra_files:
                    src = Path(runner.work_dir) / name
                    if src.is_file():
                        shutil.copy2(src, Path(tmp) / name)
                _report(report, tmp, f"epoch_{epoch:04d}")
        else:
            _report(report)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
