"""MLflow as the sweep's record. The sweep driver is the only writer.

One parent run per sweep (space file, git commit, tags) and one nested child run per trial
(flattened params, per-epoch losses and metrics, final metrics, resolved config, best
checkpoint, duration, device). Ray's stock ``MLflowLoggerCallback`` creates a new run when a
trial is restored and logs Ray's own bookkeeping keys; this callback finds a trial's run by
its ``pgd.trial_id`` tag (one run per trial id, always, across restores) and logs only real
metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from pathlib import Path

from ray.tune import Callback

from pgd.config.names import (
    DIAGNOSTIC_PREFIX,
    INHERIT_RESULT_TAGS,
    MASK_HEALTH_PREFIX,
    REPORTED_METRICS,
    TRAIN_PREFIX,
)
from pgd.plan.checks import default_tracking_uri  # noqa: F401  (re-exported)

TAG_SWEEP = "pgd.sweep_id"
TAG_TRIAL = "pgd.trial_id"
TAG_ROLE = "pgd.role"
TAG_PARENT = "mlflow.parentRunId"
TAG_LOGGED = "pgd.setup_logged"
# The last epoch whose metrics are in the run, and whether its closing report was logged: a trial
# that Tune restarts after the driver died (``ray job stop``, a lost head) re-reports epochs
# it had already reported; these two tags keep the run's history one point per epoch.
TAG_LOGGED_EPOCH = "pgd.logged_epoch"
TAG_FINAL_EPOCH = "pgd.final_epoch"
TEACHER_AP = "teacher_AP"  # metric of every KD run: its teacher's val AP; parent: teacher_AP.<model>  # params + resolved config are in (a run may be created then killed)
# what a trial reports that is a real metric (Ray adds timestamps, pids, iteration counters...)
METRIC_KEYS = REPORTED_METRICS
METRIC_PREFIXES = (TRAIN_PREFIX, MASK_HEALTH_PREFIX, DIAGNOSTIC_PREFIX)  # losses; mask health (docs/health.md); KD diagnostics


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) -> digest: a file is hashed once per process
DIGEST_CHARS = 10  # MLflow shows the digest beside the name (its own are 8-10 characters)
DATASET_CONTEXT_TAG = "mlflow.data.context"


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(c, name: str, artifact_root: str | None) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    from pgd.reporting.mlflow_ui import KIND_MODEL_TRAINING, KIND_TAG

    location = None
    if artifact_root:
        location = Path(artifact_root, name).resolve().as_uri()
    # a model-training experiment: MLflow 3 opens it on its runs, not on the GenAI overview
    return c.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND_MODEL_TRAINING})


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (first ``DIGEST_CHARS`` hex digits), cached per process by
    path, size and mtime; ``missing`` when the file is absent."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return "missing"
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()[:DIGEST_CHARS]
    return _DIGESTS[key]


def dataset_inputs(run) -> list:
    """A run's data as MLflow dataset inputs (the runs table's Dataset column): one per split,
    named after the data set's folder, the digest of that split's annotation file, the split
    as the context (``train`` / ``val``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    data = run.data
    out = []
    for split, ann in (("train", data.train_ann), ("val", data.val_ann)):
        if not ann:
            continue
        root = Path(data.root) if data.root else Path(ann).parent.parent
        ds = MetaDataset(resolve_dataset_source(str(Path(ann).resolve())), name=f"{data.kind}:{root.name}",
                         digest=file_digest(ann))
        out.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(DATASET_CONTEXT_TAG, split)]))
    return out


def log_dataset_inputs(c, run_id: str, run) -> None:
    inputs = dataset_inputs(run)
    if inputs:
        c.log_inputs(run_id, datasets=inputs)


def log_trial_files(c, run_id: str, work_dir: str | None, checkpoint: str | None = None) -> dict:
    """A finished trial's small files as artifacts of its run: the mmengine log
    (``logs/``, the latest ``<work_dir>/<timestamp>/<timestamp>.log``) and ``checkpoint.txt``,
    the final checkpoint's path (the checkpoint itself stays on the shared storage: it is
    tens to hundreds of MB). Returns what was logged."""
    logged = {}
    wd = Path(work_dir) if work_dir else None
    if wd is not None and wd.is_dir():
        logs = sorted(wd.glob("*/*.log"), key=lambda p: p.stat().st_mtime)
        if logs:
            c.log_artifact(run_id, str(logs[-1]), "logs")
            logged["log"] = str(logs[-1])
        if not checkpoint:
            ckpts = sorted(wd.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[-1]))
            checkpoint = str(ckpts[-1]) if ckpts else None
    if checkpoint:
        c.log_text(run_id, f"{checkpoint}\n", "checkpoint.txt")
        logged["checkpoint"] = checkpoint
    return logged


def find_run(c, experiment_id: str, tags: dict):
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=filt, max_results=5)
    return runs[0] if runs else None


def parent_run(c, experiment_id: str, sweep_id: str, *, space_text: str, space_name: str,
               project_dir: Path, extra_tags: dict | None = None):
    """The sweep's parent run, created once and reopened on resume."""
    run = find_run(c, experiment_id, {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"})
    if run is None:
        tags = {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep", "mlflow.runName": sweep_id,
                "pgd.space": space_name}
        from pgd.reporting.mlflow_ui import source_tags

        tags.update(source_tags(git_commit(project_dir)))
        tags.update(extra_tags or {})
        run = c.create_run(experiment_id, tags=tags, run_name=sweep_id)
        c.log_text(run.info.run_id, space_text, f"space/{space_name}.yaml")
    elif run.info.status != "RUNNING":
        c.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def log_params(c, run_id: str, params: dict) -> None:
    """All params, in batches of MLflow's limit of 100 per call."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def is_metric(key: str, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return key in METRIC_KEYS or key.startswith(METRIC_PREFIXES)


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def describe_trial(trial) -> tuple[str, dict, dict, dict]:
    """How a planned trial looks in MLflow: (run name, params, resolved config, tags). The
    params are the trial's resolved run config, flattened (``schedule.epochs``, ...): exactly
    what it trains."""
    resolved = trial.run.dump()
    params = {k: v for k, v in flatten(resolved).items() if k != "work_dir"}
    res = trial.resources
    tags = {"pgd.method": trial.method, "pgd.model": trial.run.model, "pgd.seed": trial.seed,
            "pgd.cpus": f"{res.trial_cpus():g}", "pgd.gpus": f"{res.trial_gpus():g}"}
    if trial.teacher_hash:
        tags["pgd.teacher_hash"] = trial.teacher_hash
    if trial.teacher_model:
        tags["pgd.teacher"] = trial.teacher_model
    for k, v in trial.overrides.items():
        tags[f"pgd.axis.{k}"] = v
    return trial.name, params, resolved, tags


class MLflowSweepCallback(Callback):
    """Tune callback: one nested MLflow run per planned trial (tag ``pgd.trial_id`` = the
    plan's trial key), restore-safe."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep_id: str,
                 role: str = "trial", teacher_ap: dict | None = None, commit: str | None = None):
        self.commit = commit  # the Source column's git commit, looked up once by the driver
        self.teacher_ap = dict(teacher_ap or {})  # teacher hash -> its val AP (evaluated once)
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_id = sweep_id
        self.role = role
        self._client = None
        self._runs: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._logged: dict[str, tuple[int, bool]] = {}  # Tune trial id -> (last epoch logged, final logged)
        self._keys_at: dict[str, tuple[int, set]] = {}  # Tune trial id -> (epoch, metric keys logged at it)

    def __getstate__(self):  # Tune pickles callbacks with its experiment state
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    # -------------------------------------------------------------- run lookup
    def run_id(self, trial) -> str:
        from pgd.sweep.trial import trial_plan

        plan = trial_plan(trial.config)
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        existing = find_run(self.client, self.experiment_id, {TAG_SWEEP: self.sweep_id, TAG_TRIAL: plan.key})
        name, params, resolved, tags = describe_trial(plan)
        if existing is not None:
            rid = existing.info.run_id
            tags_now = existing.data.tags
            self._logged[tid] = (int(tags_now.get(TAG_LOGGED_EPOCH, -1)), TAG_FINAL_EPOCH in tags_now)
            if existing.info.status != "RUNNING":
                self.client.update_run(rid, status="RUNNING")
            complete = existing.data.tags.get(TAG_LOGGED) == "1"
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={TAG_SWEEP: self.sweep_id, TAG_TRIAL: plan.key, TAG_ROLE: self.role,
                      TAG_PARENT: self.parent_run_id, "pgd.tune_trial_id": tid,
                      "pgd.work_dir": plan.run.work_dir, **self._source_tags(),
                      **{k: str(v) for k, v in tags.items()}},
            )
            rid, complete = run.info.run_id, False
        if not complete:  # also when a killed driver created the run but logged nothing more
            log_params(self.client, rid, params)
            self.client.log_dict(rid, resolved, "resolved_config.yaml")
            log_dataset_inputs(self.client, rid, plan.run)
            ap = self.teacher_ap.get(plan.teacher_hash) if plan.role == "trial" else None
            if ap is not None:  # the teacher this run distils from, as evaluated on the val split
                self.client.log_metric(rid, TEACHER_AP, float(ap))
            self.client.set_tag(rid, TAG_LOGGED, "1")
        self._runs[tid] = rid
        return rid

    def _source_tags(self) -> dict:
        from pgd.reporting.mlflow_ui import source_tags

        return source_tags(self.commit)

    # -------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)
        self._started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        rid = self.run_id(trial)
        tid = trial.trial_id
        step = int(result.get("epoch", 0) or 0)
        final = bool(result.get("final"))
        last, final_done = self._logged.get(tid, (-1, False))
        # a restarted trial re-reports what the run already holds: log each epoch once
        fresh = step > last or (final and not final_done and step == last)
        if fresh:
            now = int(time.time() * 1000)
            at, seen = self._keys_at.get(tid, (None, set()))
            seen = seen if at == step else set()  # the closing report repeats its epoch's values
            metrics = [Metric(k.replace("/", "."), float(v), now, step) for k, v in result.items()
                       if is_metric(k, v) and _finite(float(v)) and k.replace("/", ".") not in seen]
            if metrics:
                self.client.log_batch(rid, metrics=metrics)
            self._keys_at[tid] = (step, seen | {m.key for m in metrics})
            self.client.set_tag(rid, TAG_LOGGED_EPOCH, str(step))
            self._logged[tid] = (step, final_done or final)
            if final:
                self.client.set_tag(rid, TAG_FINAL_EPOCH, step)
        for tag, value in health_tags(result).items():  # student inheritance (docs/health.md)
            self.client.set_tag(rid, tag, value)
        for key, tag in (("checkpoint_path", "pgd.checkpoint"), ("best_checkpoint", "pgd.best_checkpoint"),
                         ("device", "pgd.device"), ("world_size", "pgd.world_size"),
                         ("hostname", "pgd.host"), ("node_id", "pgd.node_id")):  # the trial's host, as Tune reports it
            if result.get(key):
                self.client.set_tag(rid, tag, str(result[key]))

    def _close(self, trial, status: str, reason: str | None = None):
        rid = self.run_id(trial)
        started = self._started.get(trial.trial_id)
        tags = {}
        if reason:
            tags["pgd.error"] = reason[:4000]
        if started:
            tags["pgd.duration_s"] = f"{time.time() - started:.1f}"
        for k, v in tags.items():
            self.client.set_tag(rid, k, v)
        self.client.set_terminated(rid, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log_files(trial)
        self._close(trial, "FINISHED")

    def _log_files(self, trial) -> None:
        """The trial's log and final checkpoint path; never fails the sweep."""
        from pgd.sweep.trial import trial_plan

        rid = self.run_id(trial)
        plan = trial_plan(trial.config)
        try:
            ckpt = self.client.get_run(rid).data.tags.get("pgd.best_checkpoint") or None
            log_trial_files(self.client, rid, plan.run.work_dir, ckpt)
        except Exception as exc:  # noqa: BLE001 - a missing log must not lose the trial's record
            self.client.set_tag(rid, "pgd.files_error", f"{type(exc).__name__}: {exc}"[:500])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log_files(trial)
        self._close(trial, "FAILED", reason=trial_error(trial))

    def on_experiment_end(self, trials, **info):
        """Reconcile: no child run of a terminated trial stays RUNNING."""
        for trial in trials:
            status = getattr(trial, "status", None)
            if status == "TERMINATED":
                self._ensure_status(trial, "FINISHED")
            elif status == "ERROR":
                self._ensure_status(trial, "FAILED", trial_error(trial))

    def _ensure_status(self, trial, status, reason=None):
        rid = self.run_id(trial)
        if self.client.get_run(rid).info.status == "RUNNING":
            self._close(trial, status, reason)


def health_tags(result: dict) -> dict[str, str]:
    """MLflow tags of a trial's run from one reported result: the student-inheritance counts
    (``inherit/copied`` ... -> ``pgd.inherit.copied`` ...; 0 is a value, not a missing one)."""
    return {tag: str(int(result[key])) for key, tag in INHERIT_RESULT_TAGS
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)}


def trial_error(trial) -> str:
    """The reason a trial failed, from Tune's error file (first line of our TrialFailed)."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
    for line in text.splitlines():
        if "TrialFailed:" in line:
            return line.split("TrialFailed:", 1)[1].strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "trial failed (no error file)")[:2000]


def log_json_artifact(c, run_id: str, obj, path: str) -> None:
    c.log_text(run_id, json.dumps(obj, indent=2, default=str), path)
