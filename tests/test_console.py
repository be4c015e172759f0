"""The sweep console: readable trial names, epoch/total, AP, ETA, failures with their reason;
no Python dict reprs; worker output in <sweep>/logs unless --verbose."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
DICT_REPR = re.compile(r"\{'[^']+': |\{\"[^\"]+\": ")

SPACE = """
name: con
base:
  model: atss_tiny
  data:
    kind: shapes
    shapes: {train: 8, val: 4, size: 96, seed: 0}
  schedule: {epochs: 2, batch_size: 4, base_lr: 0.02, base_batch_size: 16, warmup_iters: 1,
             lr_steps: [2], img_scale: [96, 96], num_workers: 0, log_interval: 50}
grid:
  method: [student]
seeds: [0, 1]
resources: {workers_per_trial: 1, cpus_per_worker: 0.875, trial_driver_cpus: 0.125}
report: {rows: [method]}
"""


def _plan(tmp_path):
    from pgd.plan import build_plan

    p = tmp_path / "con.yaml"
    p.write_text(textwrap.dedent(SPACE))
    os.environ.setdefault("PGD_HOME", str(tmp_path / "home"))
    return build_plan(str(p), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_console_lines_are_readable(tmp_path, monkeypatch):
    from rich.console import Console

    from pgd.sweep.console import ConsoleCallback
    from pgd.sweep.watchdog import _write, status_path

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    plan = _plan(tmp_path)
    t0, t1 = plan.trials
    err = tmp_path / "error.txt"
    err.write_text("Traceback...\nTrialFailed: DivergenceError: loss is nan at epoch 1\n")
    a = SimpleNamespace(trial_id="a", config={"trial": t0.dump()}, status="RUNNING", last_result={"AP": 12.34})
    b = SimpleNamespace(trial_id="b", config={"trial": t1.dump()}, status="RUNNING", error_file=str(err))
    cb = ConsoleCallback(plan.sweep_dir)
    buf = io.StringIO()
    cb._con = Console(file=buf, highlight=False, width=200)
    cb.on_trial_start(0, [a, b], a)
    cb.on_trial_result(0, [a, b], a, {"epoch": 1, "AP": 12.34, "hostname": "x", "config": {"trial": {}}})
    status = status_path(plan.sweep_dir, t1.key)
    status.parent.mkdir(parents=True)
    _write(status, {"state": "SCHEDULING", "since": 0.0, "waiting_for": {"workers": 1, "per_worker": {"CPU": 0.875}}})
    cb.on_step_end(0, [a, b])
    cb.on_step_end(0, [a, b])  # said once, not every step
    cb.on_trial_complete(0, [a, b], a)
    cb.on_trial_error(0, [a, b], b)
    out = buf.getvalue()
    assert "t000 student seed=0  started" in out
    assert re.search(r"t000 student seed=0   epoch 1/2   AP 12.3   ETA \d+s", out)
    assert out.count("t001 student seed=1  waiting for 1 worker(s) x CPU 0.875") == 1
    assert "t000 student seed=0  done, AP 12.3" in out
    assert "t001 student seed=1  FAILED: DivergenceError: loss is nan at epoch 1" in out
    assert not DICT_REPR.search(out)


def test_pending_trial_says_it_waits_for_resources_unless_queued(tmp_path, monkeypatch):
    """A PENDING trial with a free concurrency slot waits for the cluster: said once a minute
    after 10 s, with what it asks for; PENDING trials beyond the concurrency are only queued."""
    from rich.console import Console

    import pgd.sweep.console as C

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    plan = _plan(tmp_path)
    t0, t1 = plan.trials
    a = SimpleNamespace(trial_id="a", config={"trial": t0.dump()}, status="RUNNING")
    b = SimpleNamespace(trial_id="b", config={"trial": t1.dump()}, status="PENDING")
    clock = [1000.0]
    monkeypatch.setattr(C.time, "time", lambda: clock[0])

    def lines(max_concurrent, steps):
        cb = C.ConsoleCallback(plan.sweep_dir, max_concurrent=max_concurrent)
        buf = io.StringIO()
        cb._con = Console(file=buf, highlight=False, width=200)
        for dt in steps:
            clock[0] += dt
            cb.on_step_end(0, [a, b])
        return buf.getvalue()

    out = lines(2, [0, 5, 11, 20, 30, 61])  # pending from t=0: notes at 16 s and 127 s
    assert out.count("t001 student seed=1  waiting for resources: CPU 1 for the trial process") == 2, out
    assert "(for 16s so far)" in out and "(for 2m07s so far)" in out
    assert lines(1, [0, 30, 90]) == ""  # the one slot is taken: b is queued, not waiting
    assert not DICT_REPR.search(out)


@pytest.mark.ray
def test_small_sweep_console_has_no_dict_reprs_and_logs_go_to_files(tmp_path):
    space = tmp_path / "con.yaml"
    space.write_text(textwrap.dedent(SPACE))
    env = {**os.environ, "PGD_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "sweep.py"), "--space", str(space)],
                          capture_output=True, text=True, env=env, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert not DICT_REPR.search(out), DICT_REPR.search(out).group(0)
    assert re.search(r"t000 student seed=0   epoch 2/2   AP \d+\.\d", out)
    assert "t001 student seed=1  done" in out
    logs = list((tmp_path / "home" / "sweeps").glob("con-*/logs/t000-rank0.log"))
    assert logs and "Epoch(train)" in logs[0].read_text()
    assert "worker logs:" in out and "Epoch(train)" not in out  # mmengine's log stays in the file
