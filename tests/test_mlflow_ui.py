"""The MLflow UI as a researcher sees it, in a real browser: a small sweep recorded without
Ray (pgd.testing.record_sweep), served by ``mlflow server`` on a free port, the printed record
URL loaded in headless Chromium (Debian's ``chromium``) and the rendered DOM read back: the
model-training runs page (not the GenAI overview), the sweep's saved view with every child
run and its AP. Slow: the server's start-up alone takes 10-60 s on 2 busy cores."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from test_mlflow_record import SPACE

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SERVER_START_S = 240
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--window-size=3200,1400",  # the runs grid renders only the columns in view
                  "--virtual-time-budget=30000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(f"mlflow server not healthy after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _text(dom: str) -> str:
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    t = re.sub(r"<[^>]+>", " ", t)
    return re.sub(r"\s+", " ", t)


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_runs_page_lists_child_runs_with_their_ap(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pgd.reporting.mlflow_ui import record_location
    from pgd.testing import record_sweep

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = tmp_path / "rec.yaml"
    space.write_text(textwrap.dedent(SPACE))
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = record_sweep(space, db)
    exp, sweep = rec["experiment_id"], rec["plan"].sweep_id
    port = _free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", db,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"))
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, server, log)
        # what the end of a sweep prints against this server: its saved view of the sweep
        loc = record_location(base, exp, sweep, client=MlflowClient(base))
        assert loc.command is None and loc.url == f"{base}/#/experiments/{exp}/runs?viewStateShareKey=pgd-{sweep}"
        out = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                              "--dump-dom", loc.url], capture_output=True, text=True, timeout=240)
        text = _text(out.stdout)
        assert "Training runs" in text, text[:3000]  # the model-training runs page, not the GenAI overview
        assert "Model training" in text and "Traces 0" not in text
        assert "tiny record for the UI" in text  # the experiment's description
        grid = text[text.index("Run Name"):text.index("matching runs")]
        columns = list(dict.fromkeys(["AP", *rec["plan"].space.report.columns]))
        # the saved view's columns (the grid orders metric columns by name)
        assert f"Source {' '.join(sorted(columns))} pgd.method pgd.seed" in grid, grid
        names = [t.name for t in rec["plan"].trials]
        for name in names:
            assert name in grid
        # one cell row per child run, best AP first: "<duration> sweep.py <AP> <AP50> ... <method> <seed>"
        c = MlflowClient(db)
        expected = sorted(((c.get_run(rid).data.metrics["AP"], t.method, t.seed)
                           for t in rec["plan"].trials for rid in [rec["runs"][t.key]]), reverse=True)
        cells = re.findall(r"sweep\.py (\d+(?:\.\d+)?) (?:[\d.]+ ){%d}(\w+) (\d+)" % (len(columns) - 1), grid)
        assert [(float(a), m, int(s)) for a, m, s in cells] == [(pytest.approx(a), m, s) for a, m, s in expected]
        assert f"shapes:{Path(rec['plan'].trials[0].run.data.root).name}" in grid  # the Dataset column
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
