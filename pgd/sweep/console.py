"""The sweep's console: one readable line per event, instead of Ray Tune's reporter (whose
trial column is a cut-off dump of the nested config).

``t001 pgd strategy=pgw seed=1   epoch 3/8   AP 21.4   ETA 2m10s``; a trial waiting for its
worker group says for what (from the controller status file, :mod:`pgd.sweep.watchdog`), and
so does a trial Tune could start (a concurrency slot is free) but whose resources the cluster
does not have free (a one-worker trial, which trains in its Tune process, waits there);
failures are red with their one-line reason. Worker output goes to ``<sweep>/logs/<trial>.log``
unless ``--verbose`` (:func:`redirect_output`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ray.tune import Callback

WAIT_NOTE_EVERY_S = 60.0  # repeat "waiting for resources" at most this often per trial


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, file=sys.stdout)


def fmt_duration(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def log_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / "logs"


def redirect_output(sweep_dir: str | Path, name: str) -> Path:
    """Send this process's stdout/stderr (file descriptors 1 and 2, so also C extensions and
    child processes) to ``<sweep>/logs/<name>.log``, appending."""
    path = log_dir(sweep_dir) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path


class ConsoleCallback(Callback):
    """Tune callback printing the sweep's progress as readable lines (rich, colours on a tty)."""

    def __init__(self, sweep_dir: str, role: str = "trial", max_concurrent: int | None = None):
        self.sweep_dir = str(sweep_dir)
        self.role = role
        self.max_concurrent = max_concurrent  # the sweep's concurrency: more PENDING trials are queued
        self._started: dict[str, float] = {}
        self._waiting: dict[str, float] = {}  # trial id -> when its last "waiting" note was said
        self._pending_since: dict[str, float] = {}
        self._con = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_con"] = None
        return state

    @property
    def con(self):
        if self._con is None:
            self._con = _console()
        return self._con

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _plan(trial):
        from pgd.sweep.trial import trial_plan

        try:
            return trial_plan(trial.config)
        except Exception:  # noqa: BLE001 - a line without the plan is better than no line
            return None

    def label(self, trial) -> str:
        plan = self._plan(trial)
        if plan is None:
            return str(trial.trial_id)
        name = f"teacher {plan.run.model}" if plan.role == "teacher" else plan.name
        return f"{plan.key} {name}"

    def _epochs(self, trial) -> int | None:
        plan = self._plan(trial)
        return plan.run.schedule.epochs if plan is not None else None

    def say(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        stamp = time.strftime("%H:%M:%S")
        self.con.print(Text(f"[{stamp}] ", style="dim") + Text(text, style=style or ""))

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, time.time())
        self.say(f"{self.label(trial)}  started", "cyan")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            return
        epoch = int(result.get("epoch", 0) or 0)
        total = self._epochs(trial)
        parts = [self.label(trial), f"epoch {epoch}/{total}" if total else f"epoch {epoch}"]
        if isinstance(result.get("AP"), (int, float)):
            parts.append(f"AP {float(result['AP']):.1f}")
        started = self._started.get(trial.trial_id)
        if started and total and epoch:
            spent = time.time() - started
            parts.append(f"ETA {fmt_duration(spent / epoch * (total - epoch))}")
        self.say("   ".join(parts))

    def on_trial_complete(self, iteration, trials, trial, **info):
        started = self._started.get(trial.trial_id)
        took = f" in {fmt_duration(time.time() - started)}" if started else ""
        ap = (trial.last_result or {}).get("AP")
        best = f", AP {float(ap):.1f}" if isinstance(ap, (int, float)) else ""
        self.say(f"{self.label(trial)}  done{best}{took}", "green")

    def on_trial_error(self, iteration, trials, trial, **info):
        from pgd.sweep.tracking import trial_error

        self.say(f"{self.label(trial)}  FAILED: {trial_error(trial).splitlines()[0][:300]}", "bold red")

    def on_step_end(self, iteration, trials, **info):
        """A trial waiting for resources says so, and for what (once a minute): a running
        trial's worker group, or a trial Tune would start but the cluster cannot place."""
        from pgd.sweep.watchdog import WAITING_STATES, describe_wait, read_status, status_path

        now = time.time()
        for trial in trials:
            if getattr(trial, "status", None) != "RUNNING":
                continue
            plan = self._plan(trial)
            if plan is None:
                continue
            st = read_status(status_path(self.sweep_dir, plan.key))
            if not st or st.get("state") not in WAITING_STATES or now - float(st.get("since", now)) < 10:
                continue
            if self._note_due(trial.trial_id, now):
                waited = fmt_duration(now - float(st["since"]))
                self.say(f"{self.label(trial)}  {describe_wait(st)} (for {waited} so far)", "yellow")
        self._pending_notes(trials, now)

    def _note_due(self, trial_id: str, now: float) -> bool:
        last = self._waiting.get(trial_id)
        if last is not None and now - last < WAIT_NOTE_EVERY_S:
            return False
        self._waiting[trial_id] = now
        return True

    def _pending_notes(self, trials, now: float) -> None:
        pending = [t for t in trials if getattr(t, "status", None) == "PENDING"]
        live = {t.trial_id for t in pending}
        self._pending_since = {k: v for k, v in self._pending_since.items() if k in live}
        running = sum(1 for t in trials if getattr(t, "status", None) == "RUNNING")
        free = (self.max_concurrent - running) if self.max_concurrent else len(pending)
        for trial in pending[:max(0, free)]:  # the ones Tune would start now: not queued behind a slot
            since = self._pending_since.setdefault(trial.trial_id, now)
            plan = self._plan(trial)
            if plan is None or now - since < 10 or not self._note_due(trial.trial_id, now):
                continue
            res = plan.resources
            if res.inline():  # one bundle: the process that trains
                what = f"CPU {res.trial_cpus():g}" + (f", GPU {res.trial_gpus():g}" if res.trial_gpus() else "")
                where = "the trial process"
            else:  # the Tune function first; its worker group asks for the rest once it runs
                what, where = f"CPU {res.trial_driver_cpus:g}", "the trial's Tune function"
            self.say(f"{self.label(trial)}  waiting for resources: {what} for {where} "
                     f"(for {fmt_duration(now - since)} so far)", "yellow")
