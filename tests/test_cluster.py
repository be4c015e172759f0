"""The cluster path end to end, on this one machine (``make test-cluster``; marker ``cluster``,
not in the default run).

Starts a two-node Ray cluster (``ray start --head`` and ``ray start --address`` with its own
CPUs and a ``node2`` resource, both with token authentication on and a private token), an MLflow
tracking server (SQLite backend, artifact serving) on free ports and a shared ``PGD_HOME``, then
submits the README's cluster command (``ray job submit --working-dir . --runtime-env-json ...
-- python pipelines/sweep.py --space ...``) over HTTP and checks the record on the server. Then
it stops a second submission mid-sweep (``ray job stop``) and resubmits it with ``--resume``.
Every process it started is stopped by its process group, even on failure (never ``ray stop``:
it would stop every Ray cluster on the machine). docs/cluster.md is written from this file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXCLUDES = [".venv", ".git", "data", "cache", "sweeps", "mlartifacts", "mlflow.db", "shared"]

SPACE = """
name: {name}
base:
  model: atss_tiny
  data:
    kind: shapes
    shapes: {{train: 16, val: 4, size: 96, seed: 0}}
  schedule: {{epochs: {epochs}, batch_size: 4, base_lr: 0.02, base_batch_size: 16, warmup_iters: 1,
             lr_steps: [{epochs}], img_scale: [96, 96], num_workers: 0, log_interval: 50}}
grid:
  method: [student]
seeds: {seeds}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.875, trial_driver_cpus: 0.125}}
report: {{rows: [method]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except urllib.error.HTTPError:  # it answers (401 without the token is an answer)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


class Procs:
    """Processes started in their own session: stopped by their process group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(p.pid, sig)  # the group this test created (p.pid is its leader)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def kill_leftovers(temp_dirs: list[Path]) -> None:
    """Ray processes of our nodes that left the process groups we started (Ray starts some
    workers, e.g. detached actors, in sessions of their own): found by their temp dir on the
    command line, in the environment or as working directory; SIGKILLed by PID."""
    marks = [str(d).encode() for d in temp_dirs]
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            blob = (pid_dir / "cmdline").read_bytes() + (pid_dir / "environ").read_bytes()
            blob += os.readlink(pid_dir / "cwd").encode()
        except OSError:
            continue
        if any(m in blob for m in marks):
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    home = tmp / "shared_pgd"  # stands in for storage every node mounts
    home.mkdir()
    # Each node gets its own temp dir, as separate machines have. Without it the worker node uses
    # the head's (Ray's default for a second node on one machine), and its runtime-env agent
    # unpacks the job's working_dir into the same folder the running driver imports from: the
    # driver then dies mid-import ("cannot import name ...", "oneMKL FATAL ERROR: Cannot load
    # libtorch_cpu.so", segfaults).
    ray_tmp = Path(tempfile.mkdtemp(prefix="pgdray-", dir="/tmp"))  # short: Ray's socket paths
    worker_tmp = Path(tempfile.mkdtemp(prefix="pgdray2-", dir="/tmp"))
    gcs, dash, mlflow_port = free_port(), free_port(), free_port()
    user_home = tmp / "user"  # the nodes' ~: a job without PGD_HOME works in ~/pgd-home
    user_home.mkdir()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "PYTHONUNBUFFERED": "1", "HOME": str(user_home)}
    for k in ("RAY_ADDRESS", "PGD_HOME", "MLFLOW_TRACKING_URI", "PYTHONPATH"):
        env.pop(k, None)
    procs = Procs(tmp)
    try:
        procs.start("head", [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
                             "--num-cpus=1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", f"--temp-dir={ray_tmp}",
                             f"--ray-client-server-port={free_port()}",
                             f"--dashboard-agent-listen-port={free_port()}",
                             f"--metrics-export-port={free_port()}"], env)
        wait_http(f"http://127.0.0.1:{dash}/api/version", 300)
        procs.start("worker", [str(BIN / "ray"), "start", "--block", f"--address=127.0.0.1:{gcs}",
                               "--num-cpus=1", '--resources={"node2": 1}', f"--temp-dir={worker_tmp}",
                               f"--dashboard-agent-listen-port={free_port()}",
                               f"--metrics-export-port={free_port()}"], env)
        store = tmp / "mlflow"
        store.mkdir()
        procs.start("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                               "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                               "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
                               "--workers", "1"], env)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 300)  # ~100 s on the loaded 2-core machine
        address = f"http://127.0.0.1:{dash}"
        t0 = time.time()
        while time.time() - t0 < 120:  # both nodes joined
            status = subprocess.run([str(BIN / "ray"), "status", f"--address=127.0.0.1:{gcs}"], env=env,
                                    capture_output=True, text=True)
            if "node2" in status.stdout and status.stdout.count("node_") >= 2:
                break
            time.sleep(2)
        yield dict(address=address, env=env, home=home, tmp=tmp, ray_tmps=[ray_tmp, worker_tmp],
                   uri=f"http://127.0.0.1:{mlflow_port}")
    finally:
        procs.stop_all()
        kill_leftovers([ray_tmp, worker_tmp])
        for d in (ray_tmp, worker_tmp):
            shutil.rmtree(d, ignore_errors=True)


def write_space(c, name: str, seeds: list[int], epochs: int) -> Path:
    p = c["tmp"] / f"{name}.yaml"
    p.write_text(textwrap.dedent(SPACE.format(name=name, seeds=seeds, epochs=epochs)))
    return p


def submit(c, space: Path, env_vars: dict, *extra, wait: bool = True, submission_id: str | None = None,
           timeout: float = 1500):
    """The README's cluster command."""
    runtime_env = {"env_vars": env_vars, "excludes": EXCLUDES}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", c["address"], "--working-dir", ".",
           "--runtime-env-json", json.dumps(runtime_env)]
    if submission_id:
        cmd += ["--submission-id", submission_id]
    if not wait:
        cmd += ["--no-wait"]
    cmd += ["--", "python", "pipelines/sweep.py", "--space", str(space), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=c["env"], capture_output=True, text=True, timeout=timeout)


def job_cmd(c, *args) -> str:
    out = subprocess.run([str(BIN / "ray"), "job", *args, "--address", c["address"]], env=c["env"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def server_runs(c, experiment: str):
    from mlflow.tracking import MlflowClient

    mc = MlflowClient(c["uri"])
    exp = mc.get_experiment_by_name(experiment)
    return mc, ([] if exp is None else mc.search_runs([exp.experiment_id], max_results=1000))


def children(runs):
    return [r for r in runs if r.data.tags.get("pgd.role") == "trial"]


def test_job_submit_two_nodes_mlflow_server(cluster):
    c = cluster
    space = write_space(c, "clu", [0, 1], epochs=1)
    t0 = time.time()
    proc = submit(c, space, {"PGD_HOME": str(c["home"]), "MLFLOW_TRACKING_URI": c["uri"]})
    took = time.time() - t0
    assert proc.returncode == 0 and "succeeded" in proc.stdout.lower(), proc.stdout[-4000:] + proc.stderr[-2000:]
    print(f"job 1 (2 trials x 1 epoch): {took:.0f} s")
    mc, runs = server_runs(c, "clu")
    parents = [r for r in runs if r.data.tags.get("pgd.role") == "sweep"]
    kids = children(runs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["pgd.trial_id"] for r in kids) == ["t000", "t001"]
    assert all(r.info.status == "FINISHED" and "AP" in r.data.metrics for r in kids)
    assert len({r.data.tags.get("pgd.node_id") for r in kids}) == 2  # trials ran on both nodes
    arts = [a.path for a in mc.list_artifacts(parents[0].info.run_id)]
    assert "plan.yaml" in arts
    local = mc.download_artifacts(parents[0].info.run_id, "plan.yaml", tempfile.mkdtemp())
    assert "t001" in Path(local).read_text()  # served by the tracking server
    report = {a.path for a in mc.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/table.png"} <= report, report
    table = Path(mc.download_artifacts(parents[0].info.run_id, "report/table.md", tempfile.mkdtemp())).read_text()
    assert "| student | 2 |" in table  # both seeds in the row, as the server serves it
    # what the user needs afterwards is under PGD_HOME, not in the job's temporary working dir
    sweep = next((c["home"] / "sweeps").glob("clu-*"))
    assert (sweep / "report").is_dir() and (sweep / "plan.yaml").is_file()
    for wd in (wd for t in c["ray_tmps"] for wd in t.glob("session_*/runtime_resources/working_dir_files/*")):
        leaked = [p for p in ("sweeps", "mlflow.db", "mlartifacts", "cache", "data") if (wd / p).exists()]
        assert not leaked, f"{wd}: {leaked}"


def test_job_stop_and_resume(cluster):
    c = cluster
    space = write_space(c, "clr", [0, 1, 2], epochs=2)
    env_vars = {"PGD_HOME": str(c["home"]), "MLFLOW_TRACKING_URI": c["uri"]}
    sid = f"pgd-clr-{secrets.token_hex(3)}"
    assert submit(c, space, env_vars, wait=False, submission_id=sid).returncode == 0
    t0 = time.time()
    done_before = {}
    while time.time() - t0 < 1200:  # stop once a trial finished and another runs
        _, runs = server_runs(c, "clr")
        done_before = {r.data.tags["pgd.trial_id"]: r for r in children(runs) if r.info.status == "FINISHED"}
        if done_before:
            break
        time.sleep(5)
    assert done_before, job_cmd(c, "logs", sid)[-4000:]
    job_cmd(c, "stop", sid)
    t1 = time.time()
    while "STOPPED" not in job_cmd(c, "status", sid) and time.time() - t1 < 120:
        time.sleep(2)
    proc = submit(c, space, env_vars, "--resume")
    assert proc.returncode == 0 and "succeeded" in proc.stdout.lower(), proc.stdout[-4000:]
    _, runs = server_runs(c, "clr")
    kids = children(runs)
    ids = [r.data.tags["pgd.trial_id"] for r in kids]
    assert sorted(ids) == ["t000", "t001", "t002"]  # no duplicate child run
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for r in kids:
        if r.data.tags["pgd.trial_id"] in done_before:  # not re-run: same run, same single history
            assert r.info.run_id == done_before[r.data.tags["pgd.trial_id"]].info.run_id
            mc, _ = server_runs(c, "clr")
            assert len(mc.get_metric_history(r.info.run_id, "AP")) == 2  # epochs 1 and 2, once each
        assert r.info.status == "FINISHED"


@pytest.mark.parametrize("only", ["MLFLOW_TRACKING_URI", "PGD_HOME"])
def test_job_with_only_one_env_var(cluster, only):
    c = cluster
    name = "clm" if only == "MLFLOW_TRACKING_URI" else "clh"
    space = write_space(c, name, [0], epochs=1)
    env_vars = {"MLFLOW_TRACKING_URI": c["uri"]} if only == "MLFLOW_TRACKING_URI" else {"PGD_HOME": str(c["home"])}
    proc = submit(c, space, env_vars)
    assert proc.returncode == 0 and "succeeded" in proc.stdout.lower(), proc.stdout[-4000:]
    if only == "MLFLOW_TRACKING_URI":
        _, runs = server_runs(c, name)
        assert len(children(runs)) == 1 and "PGD_HOME is not set" in proc.stdout
        assert list((c["tmp"] / "user" / "pgd-home" / "sweeps").glob("clm-*/report"))  # ~/pgd-home, kept
    else:  # the default tracking URI: sqlite under the shared PGD_HOME
        from mlflow.tracking import MlflowClient

        mc = MlflowClient(f"sqlite:///{c['home'] / 'mlflow.db'}")
        exp = mc.get_experiment_by_name(name)
        assert len(children(mc.search_runs([exp.experiment_id]))) == 1
