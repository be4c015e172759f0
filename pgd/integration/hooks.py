"""mmengine hooks of the platform: one progress line per epoch, a hard stop on a non-finite
loss, and a metrics file that survives the run (``<work_dir>/metrics.jsonl``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; the run is stopped at once."""


def _fmt_secs(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise DivergenceError on the first iteration whose total loss is NaN or infinite."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs:
            return
        bad = {k: float(v) for k, v in outputs.items() if not math.isfinite(float(v))}
        if bad:
            raise DivergenceError(
                f"non-finite loss at epoch {runner.epoch + 1}, iteration {runner.iter + 1}: "
                + ", ".join(f"{k}={v}" for k, v in bad.items())
                + " (lower the learning rate or the distillation weights, or enable grad_clip)"
            )


@HOOKS.register_module()
class EpochSummaryHook(Hook):
    """Per epoch: mean of every logged loss term, lr, time, ETA; and each evaluation's
    metrics. Also appends both to ``<work_dir>/metrics.jsonl`` (rank 0)."""

    priority = "LOW"

    def __init__(self, metrics_file: str = "metrics.jsonl"):
        self.metrics_file = metrics_file
        self._sums: dict[str, float] = {}
        self._n = 0
        self._t0 = 0.0
        self._epoch_times: list[float] = []
        self.last_losses: dict[str, float] = {}
        self.epochs_done = 0
        self.last_metrics: dict | None = None

    def _write(self, runner, record: dict) -> None:
        if is_main_process():
            path = Path(runner.work_dir) / self.metrics_file
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def before_train_epoch(self, runner):
        self._sums, self._n, self._t0 = {}, 0, time.time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for k, v in (outputs or {}).items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._n += 1

    def after_train_epoch(self, runner):
        dt = time.time() - self._t0
        self._epoch_times.append(dt)
        done, total = runner.epoch + 1, runner.max_epochs
        self.epochs_done = done
        eta = (total - done) * sum(self._epoch_times) / len(self._epoch_times)
        self.last_losses = {k: v / max(self._n, 1) for k, v in self._sums.items()}
        lr = runner.optim_wrapper.get_lr()
        lr = float(next(iter(lr.values()))[0]) if isinstance(lr, dict) else float(lr)
        terms = " ".join(f"{k} {v:.4f}" for k, v in self.last_losses.items() if k != "loss")
        runner.logger.info(
            f"[epoch {done}/{total}] loss {self.last_losses.get('loss', float('nan')):.4f} "
            f"({terms}) lr {lr:.2e} | {self._n} iters in {_fmt_secs(dt)}, ETA {_fmt_secs(eta)}"
        )
        self._write(runner, dict(event="train_epoch", epoch=done, lr=lr, seconds=dt,
                                 **{f"train/{k}": v for k, v in self.last_losses.items()}))

    def after_val_epoch(self, runner, metrics=None):
        if not metrics:
            return
        self.last_metrics = dict(metrics)
        epoch = self.epochs_done  # not runner.epoch: that would build the train loop in test mode
        runner.logger.info(
            f"[eval epoch {epoch}] " + " ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in metrics.items())
        )
        self._write(runner, dict(event="val", epoch=epoch, **{k: float(v) for k, v in metrics.items()}))


LATENCY_INFO = "latency_ms"  # message-hub key (saved with checkpoints, so resumes keep it)


@HOOKS.register_module()
class LatencyHook(Hook):
    """Measures inference latency (ms/image, batch 1) once, at the first evaluation, on rank 0,
    and keeps it in the message hub for the run's result and every later report. Latency
    depends on the architecture, not the weights, so one measurement serves the whole run."""

    priority = "NORMAL"  # before reporting hooks (LOWEST) read it

    def __init__(self, num_images: int):
        self.num_images = num_images

    def after_val_epoch(self, runner, metrics=None):
        measure_once(runner, self.num_images)


def measure_once(runner, num_images: int) -> float | None:
    """The run's latency from the message hub, measured now (rank 0) if it is not there yet."""
    hub = runner.message_hub
    if hub.get_info(LATENCY_INFO) is None and is_main_process():
        from pgd.training.latency import measure_latency

        value = measure_latency(runner, num_images)
        hub.update_info(LATENCY_INFO, value)
        runner.logger.info(f"inference latency {value:.1f} ms/image (batch 1)")
    return hub.get_info(LATENCY_INFO)
