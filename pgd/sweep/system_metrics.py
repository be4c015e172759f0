"""MLflow's system metrics (CPU, memory, disk, network; GPU with ``pynvml``) for a trial's
child run, sampled where the trial trains.

Where the sampling runs: in the trial's Ray Train worker of local rank 0 on each node (one
sampler per node, named ``node<k>`` when a trial spans several nodes), because that is the
machine whose CPU/GPU the trial uses; the Tune driver may sit on a head node without GPUs.
The sampler writes only ``system/*`` metrics, to the child run the driver created (found by
its ``pgd.sweep_id`` / ``pgd.trial_id`` tags); it never creates, renames, tags or ends a run,
so the driver stays the only writer of the run's lifecycle, and MLflow's monitor stops by
itself once the driver ends the run. It is off, with the reason returned, when ``psutil``
(MLflow's CPU monitor needs it) is not installed, when the sweep has no tracking URI, or when
``PGD_SYSTEM_METRICS=0``. ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` (seconds, default
:data:`SAMPLING_INTERVAL_S`) sets the period.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from contextlib import contextmanager

SAMPLING_INTERVAL_S = 10.0
FIND_RUN_TIMEOUT_S = 120.0  # the driver creates the child run when Tune starts the trial
ENV_SWITCH = "PGD_SYSTEM_METRICS"


def unavailable(tracking: dict | None, environ=None) -> str | None:
    """Why system metrics are off for this worker, or None when they are on."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_SWITCH, "1") in ("0", "false", "off"):
        return f"{ENV_SWITCH}={environ[ENV_SWITCH]}"
    if not tracking or not tracking.get("uri"):
        return "no tracking URI in the trial's context"
    if importlib.util.find_spec("psutil") is None:
        return "psutil is not installed (MLflow's CPU monitor needs it; pip install psutil, and pynvml for GPUs)"
    return None


def find_child_run(tracking: dict, trial_key: str, timeout_s: float = FIND_RUN_TIMEOUT_S,
                   stop: threading.Event | None = None) -> str | None:
    """The run id of trial ``trial_key`` of this sweep, waiting for the driver to create it."""
    from pgd.sweep.tracking import TAG_SWEEP, TAG_TRIAL, client, find_run

    c = client(tracking["uri"])
    deadline = time.monotonic() + timeout_s
    while True:
        run = find_run(c, tracking["experiment_id"], {TAG_SWEEP: tracking["sweep_id"], TAG_TRIAL: trial_key})
        if run is not None:
            return run.info.run_id
        if time.monotonic() > deadline or (stop is not None and stop.wait(2.0)):
            return None
        if stop is None:
            time.sleep(2.0)


@contextmanager
def trial_system_metrics(tracking: dict | None, trial_key: str, *, node_id: str | None = None):
    """Sample system metrics into the trial's child run while the block runs (a background
    thread finds the run, then MLflow's ``SystemMetricsMonitor`` samples; training never
    waits). Yields the reason they are off, or None."""
    reason = unavailable(tracking)
    if reason is not None:
        yield reason
        return
    stop = threading.Event()
    holder: dict = {}

    def start():
        try:
            rid = find_child_run(tracking, trial_key, stop=stop)
            if rid is None or stop.is_set():
                return
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            mon = SystemMetricsMonitor(rid, sampling_interval=SAMPLING_INTERVAL_S, resume_logging=True,
                                       node_id=node_id, tracking_uri=tracking["uri"])
            mon.start()
            holder["monitor"] = mon
        except Exception:  # noqa: BLE001 - metrics about the machine must never fail a trial
            return

    t = threading.Thread(target=start, name="pgd-system-metrics", daemon=True)
    t.start()
    try:
        yield None
    finally:
        stop.set()
        t.join(timeout=10)
        mon = holder.get("monitor")
        if mon is not None:
            try:
                mon.finish()
            except Exception:  # noqa: BLE001
                pass
