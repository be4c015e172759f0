"""A trial waits for its worker group as long as the sweep allows, and a worker group that
cannot start ends its trial as FAILED (never a hung ``trainer.fit()``).

The watchdog's logic is tested without Ray (fast); the two Ray tests run one trial directly
with ``run_trial`` (no Tune) on a 2-CPU local cluster whose CPUs an actor holds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pgd.sweep.watchdog import (
    WatchdogTimeout,
    _write,
    describe_wait,
    fit_with_watchdog,
    read_status,
)

SPACE = """
name: wd
base:
  model: atss_tiny
  data:
    kind: shapes
    shapes: {train: 8, val: 4, size: 96, seed: 0}
  schedule: {epochs: 1, batch_size: 4, base_lr: 0.02, base_batch_size: 16, warmup_iters: 1,
             lr_steps: [1], img_scale: [96, 96], num_workers: 0, log_interval: 50}
grid:
  method: [student]
seeds: [0]
resources: {workers_per_trial: 1, cpus_per_worker: 1, trial_driver_cpus: 0, start_timeout_s: %s}
report: {rows: [method]}
"""


# ------------------------------------------------------------------ the watchdog alone
def test_watchdog_fails_a_hung_fit_with_the_controller_reason(tmp_path):
    status = tmp_path / "s.json"
    _write(status, {"state": "ERRORED", "since": time.time(), "reason": "WorkerGroupStartupTimeoutError: x"})
    hang = threading.Event()
    t0 = time.time()
    with pytest.raises(WatchdogTimeout, match="WorkerGroupStartupTimeoutError: x"):
        fit_with_watchdog(lambda: hang.wait(60), status, start_timeout_s=100, grace_s=0.5, poll_s=0.1)
    assert time.time() - t0 < 5
    hang.set()


def test_watchdog_fails_a_worker_group_waiting_past_the_timeout(tmp_path):
    status = tmp_path / "s.json"
    wait = {"workers": 2, "per_worker": {"CPU": 1.0, "GPU": 0.5}}
    _write(status, {"state": "SCHEDULING", "since": time.time(), "waiting_for": wait})
    assert describe_wait(read_status(status)) == "waiting for 2 worker(s) x CPU 1, GPU 0.5"
    hang = threading.Event()
    with pytest.raises(WatchdogTimeout, match=r"did not start within 0.5 s: waiting for 2 worker\(s\) x CPU 1"):
        fit_with_watchdog(lambda: hang.wait(60), status, start_timeout_s=0.5, grace_s=0.5, poll_s=0.1)
    hang.set()


def test_watchdog_passes_results_and_errors_through(tmp_path):
    assert fit_with_watchdog(lambda: 7, tmp_path / "none.json", start_timeout_s=5) == 7

    def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        fit_with_watchdog(boom, tmp_path / "none.json", start_timeout_s=5)


def test_start_timeout_is_a_resources_key_with_a_default():
    from pgd.config.defaults import WORKER_START_TIMEOUT_S
    from pgd.config.space import ResourcesSpec

    assert ResourcesSpec().start_timeout_s == WORKER_START_TIMEOUT_S >= 600
    assert ResourcesSpec(start_timeout_s=5).start_timeout_s == 5


# ------------------------------------------------------------------ with Ray
@pytest.fixture()
def cluster(tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _trial(tmp_path: Path, timeout_s: float):
    from pgd.plan import build_plan
    from pgd.sweep.trial import SweepContext

    space = tmp_path / "wd.yaml"
    space.write_text(SPACE % timeout_s)
    plan = build_plan(str(space), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return plan.trials[0], SweepContext(name=plan.sweep_id, sweep_dir=plan.sweep_dir, home=plan.home)


def _hold_all_cpus(ray):
    @ray.remote(num_cpus=2)
    class Hold:
        def ready(self):
            return True

    h = Hold.remote()
    ray.get(h.ready.remote())
    return h


@pytest.mark.ray
def test_trial_started_on_a_saturated_cluster_waits_and_completes(cluster, tmp_path):
    from pgd.sweep.trial import run_trial
    from pgd.sweep.watchdog import status_path

    trial, ctx = _trial(tmp_path, 300)
    hold = _hold_all_cpus(cluster)
    release = threading.Timer(8.0, lambda: cluster.kill(hold))
    release.start()
    t0 = time.time()
    run_trial(trial, ctx)  # Ray's own 60 s default would not matter here; the wait does
    assert time.time() - t0 > 8
    assert read_status(status_path(ctx.sweep_dir, trial.key))["state"] == "FINISHED"
    assert (Path(trial.run.work_dir) / "metrics.jsonl").is_file()


@pytest.mark.ray
def test_worker_group_that_cannot_start_fails_its_trial_within_the_timeout(cluster, tmp_path):
    from pgd.sweep.trial import TrialFailed, run_trial

    trial, ctx = _trial(tmp_path, 5)
    hold = _hold_all_cpus(cluster)  # held for the whole test: the worker never gets its CPU
    t0 = time.time()
    with pytest.raises(TrialFailed, match=r"(?i)start.*(timed out|within 5 s)"):
        run_trial(trial, ctx)
    assert time.time() - t0 < 5 + 60  # the timeout + the watchdog's grace + Ray's teardown
    del hold
