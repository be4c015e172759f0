"""A trial's Ray Train controller, watched: a status file written by the controller and a
watchdog around ``trainer.fit()`` in the trial's Tune function.

Ray Train V2 runs each trainer's control loop in a controller actor; ``trainer.fit()`` waits on
it. On Ray 2.60 a worker group that does not start within
``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` (60 s by default) raises
``WorkerGroupStartupTimeoutError`` in the controller, which by default retries for ever
(``FailureConfig.controller_failure_limit=-1``): under load a trial then never ends. So:

- the trial sets the timeout from the sweep (``resources.start_timeout_s``) and allows no
  controller retry;
- :class:`ControllerStatusCallback` (runs in the controller actor) writes every state change,
  what the worker group waits for and the error of a failed run to
  ``<sweep>/status/<trial key>.json``: the console reads it to say that a trial is waiting for
  resources, and for what;
- :func:`fit_with_watchdog` runs ``fit()`` in a thread and fails the trial with the
  controller's reason when the controller reached a terminal error (or the worker group did not
  start within the timeout) and ``fit()`` has not returned ``WATCHDOG_GRACE_S`` later.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
from ray.train.v2._internal.execution.callback import ControllerCallback

from pgd.config.defaults import WATCHDOG_GRACE_S

START_TIMEOUT_ENV = WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
WAITING_STATES = ("INITIALIZING", "SCHEDULING", "RESCHEDULING")
ERROR_STATES = ("ERRORED", "ABORTED")


def status_path(sweep_dir: str | Path, key: str) -> Path:
    return Path(sweep_dir) / "status" / f"{key}.json"


def read_status(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _first_line(err) -> str:
    from pgd.sweep.trial import _short_reason

    return _short_reason(err) if isinstance(err, BaseException) else str(err).splitlines()[0][:500]


class ControllerStatusCallback(ControllerCallback):
    """Writes the controller's state to a JSON file on every change (runs in the controller)."""

    def __init__(self, path: str, workers: int, per_worker: dict):
        self.path = str(path)
        self.waiting_for = {"workers": int(workers), "per_worker": dict(per_worker)}

    def after_controller_state_update(self, previous_state, current_state):
        name = current_state._state_type.name
        data = {"state": name, "since": time.time(), "waiting_for": self.waiting_for}
        err = getattr(current_state, "training_failed_error", None)
        if err is not None:
            data["reason"] = _first_line(err)
        try:
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, data)
        except OSError:
            pass  # the status file is advisory: never fail a run over it


class WatchdogTimeout(RuntimeError):
    """The trial's controller ended (or never started its workers) but ``fit()`` hung."""


def fit_with_watchdog(fit, status_file: str | Path, start_timeout_s: float,
                      grace_s: float = WATCHDOG_GRACE_S, poll_s: float = 1.0):
    """``fit()`` in a daemon thread; returns its result or re-raises its error, or raises
    :class:`WatchdogTimeout` with the controller's reason when the controller is done (or
    stuck waiting for workers past ``start_timeout_s``) and ``fit()`` did not return."""
    box: dict = {}

    def target():
        try:
            box["result"] = fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name="pgd-trainer-fit", daemon=True)
    t0 = time.time()
    th.start()
    while th.is_alive():
        th.join(poll_s)
        if not th.is_alive():
            break
        st = read_status(status_file)
        now = time.time()
        if st is None:
            if now - t0 > start_timeout_s + grace_s:
                raise WatchdogTimeout(f"the Ray Train controller did not start within {start_timeout_s + grace_s:g} s")
            continue
        since = float(st.get("since", now))
        if st.get("state") in ERROR_STATES and now - since > grace_s:
            raise WatchdogTimeout(st.get("reason") or f"the Ray Train controller ended {st['state']}")
        if st.get("state") in WAITING_STATES and now - since > start_timeout_s + grace_s:
            raise WatchdogTimeout(f"the worker group did not start within {start_timeout_s:g} s: "
                                  f"{describe_wait(st)}")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def describe_wait(st: dict) -> str:
    """``waiting for 2 worker(s) x CPU 1, GPU 0.5`` from a status dict."""
    w = st.get("waiting_for") or {}
    res = ", ".join(f"{k} {v:g}" for k, v in (w.get("per_worker") or {}).items())
    return f"waiting for {w.get('workers', '?')} worker(s) x {res or 'no resources'}"
