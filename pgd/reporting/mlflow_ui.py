"""What the MLflow UI shows of a sweep: the experiment's kind and description, the parent
run's headline metrics and description, and where to open the record (a tracking server's
runs page, or the ``mlflow ui`` command for a SQLite store plus the URL it will serve).

MLflow 3 picks an experiment's start page from the tag ``mlflow.experimentKind``: without it
the experiment opens on the GenAI overview (traces, token usage); ``custom_model_development``
makes it a model-training experiment that opens on its runs. ``mlflow.note.content`` is the
description the UI shows on an experiment's and a run's page (Markdown). See docs/mlflow.md.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

KIND_TAG = "mlflow.experimentKind"
KIND_MODEL_TRAINING = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME = "pipelines/sweep.py"
UI_PORT = 5000  # the port of the printed `mlflow ui` command
BEST_ROW_TAG = "pgd.best_row"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + key: a saved runs-page view, opened by ?viewStateShareKey=key
VIEW_TAGS = ("pgd.method", "pgd.seed")  # tag columns of a sweep's saved view
_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric key on every platform: alphanumerics, ``_ - . /`` and
    spaces kept, anything else (``=``, ``:``, ``,``...) becomes ``_``; no leading ``/``, no
    ``..`` (MLflow refuses names that normalise to another path); at most 250 characters."""
    key = _BAD_METRIC_CHARS.sub("_", name.strip())
    key = re.sub(r"/{2,}", "/", key).strip("/")
    while ".." in key:
        key = key.replace("..", "._")
    return key[:250] or "_"


def row_metric_key(metric: str, label: str) -> str:
    """The parent-run metric holding one table row's mean: ``AP/atss pgd pgw``."""
    return metric_key(f"{metric}/{label}")


def headline_metrics(table, metric: str) -> tuple[dict[str, float], str | None]:
    """The parent run's headline: every row's mean ``metric`` (``<metric>/<row label>``) and
    ``best_row_<metric>``, the best mean among the student rows (teachers excluded: the
    comparison is between students). Returns ``(metrics, label of the best row)``."""
    from pgd.reporting.tables import TEACHER

    out: dict[str, float] = {}
    best, best_label = None, None
    f = table.frame
    col = f"{metric}_mean"
    if col not in f:
        return out, None
    for i in range(len(f)):
        v = f.iloc[i][col]
        if v is None or not math.isfinite(float(v)):
            continue
        label = table.label(i)
        out[row_metric_key(metric, label)] = float(v)
        if f.iloc[i].get("role") != TEACHER and (best is None or float(v) > best):
            best, best_label = float(v), label
    if best is not None:
        out[metric_key(f"best_row_{metric}")] = best
    return out, best_label


def invocation(space_path: str | None = None) -> str:
    """The command that started this process, as a user would retype it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("sweep.py"):
        return shlex.join(["python", *argv])
    return shlex.join(["python", SOURCE_NAME, "--space", str(space_path)]) if space_path else shlex.join(argv)


def experiment_note(description: str, command: str, report_dir: str | Path, sweep_id: str) -> str:
    """The experiment's description (Markdown) as the UI shows it above the runs."""
    return "\n".join([
        description.strip() or "(no description in the space file)", "",
        f"- last sweep: `{sweep_id}`",
        f"- command: `{command}`",
        f"- report (table, figures, best config): `{report_dir}`; also the `report/` artifacts "
        "of the sweep's parent run",
        "- compare runs: docs/mlflow.md",
    ])


def tag_experiment(c, experiment_id: str, *, note: str | None = None) -> None:
    """Mark the experiment as model training (so it opens on its runs) and set its note."""
    c.set_experiment_tag(experiment_id, KIND_TAG, KIND_MODEL_TRAINING)
    if note is not None:
        c.set_experiment_tag(experiment_id, NOTE_TAG, note)


def source_tags(commit: str | None) -> dict[str, str]:
    """The Source column of the runs table: the entry point and the git commit."""
    tags = {SOURCE_NAME_TAG: SOURCE_NAME, SOURCE_TYPE_TAG: "LOCAL"}
    if commit:
        tags[SOURCE_COMMIT_TAG] = commit
    return tags


def sweep_filter(sweep_id: str) -> str:
    """The runs-page search that shows one sweep's runs (its parent and children)."""
    return f"tags.`pgd.sweep_id` = '{sweep_id}'"


def view_key(sweep_id: str) -> str:
    """The share key of a sweep's saved runs-page view."""
    return "pgd-" + re.sub(r"[^A-Za-z0-9_\-.]", "_", sweep_id)


def sweep_view(sweep_id: str, metric: str, columns) -> dict:
    """A saved view of the runs page (MLflow's "Save view" state, stored as the experiment
    tag ``mlflow.sharedViewState.<key>``): the sweep's runs, best ``metric`` first, with the
    Dataset and Source columns, the method and seed tags and the table's metric columns, so
    PGD and the student compare without a click."""
    cols = [f"attributes.`{a}`" for a in ("Dataset", "Source")]
    cols += [f"tags.`{t}`" for t in VIEW_TAGS]
    cols += [f"metrics.`{m}`" for m in dict.fromkeys([metric, *columns])]
    return {"searchFilter": sweep_filter(sweep_id), "orderByKey": f"metrics.`{metric}`", "orderByAsc": False,
            "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": cols, "runsHiddenMode": "SHOW_ALL", "compareRunsMode": "TABLE"}


def save_sweep_view(c, experiment_id: str, sweep_id: str, metric: str, columns) -> str:
    """Write the sweep's saved view to the experiment; returns its share key."""
    key = view_key(sweep_id)
    c.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(sweep_view(sweep_id, metric, columns)))
    return key


def saved_view(c, experiment_id: str | None, sweep_id: str | None) -> str | None:
    """The share key of the sweep's saved view when the experiment holds it."""
    if c is None or not experiment_id or not sweep_id:
        return None
    key = view_key(sweep_id)
    return key if VIEW_TAG_PREFIX + key in c.get_experiment(experiment_id).tags else None


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}"


def runs_url(base: str, experiment_id: str, sweep_id: str | None = None, metric: str | None = "AP",
             view: str | None = None) -> str:
    """The experiment's runs page: the saved ``view`` when given (its share key), else filtered
    to one sweep and ordered by ``metric`` (best first) when given (MLflow 3 keeps
    ``searchFilter``/``orderByKey``/``orderByAsc`` in the URL; a URL holding any of them
    ignores a shared view)."""
    url = f"{experiment_url(base, experiment_id)}/runs"
    if view:
        return f"{url}?viewStateShareKey={quote(view, safe='')}"
    q = []
    if sweep_id:
        q.append("searchFilter=" + quote(sweep_filter(sweep_id), safe=""))
    if metric:
        q.append("orderByKey=" + quote(f"metrics.`{metric}`", safe="") + "&orderByAsc=false")
    return url + ("?" + "&".join(q) if q else "")


@dataclass(frozen=True)
class RecordLocation:
    url: str  # the runs page (a server's, or the one `command` will serve)
    command: str | None = None  # what serves a SQLite store; None for a tracking server

    def describe(self) -> str:
        if self.command is None:
            return f"open the record: {self.url}"
        return f"open the record: {self.command}  then {self.url}"


def record_location(tracking_uri: str, experiment_id: str | None, sweep_id: str | None = None, *,
                    metric: str | None = "AP", port: int = UI_PORT, client=None) -> RecordLocation:
    """Where a person opens a sweep's record: on a tracking server its runs page; for a
    SQLite (or other database) store the ``mlflow ui`` command and the page it will serve.
    With ``client``, the page is the sweep's saved view when the experiment holds one."""
    view = saved_view(client, experiment_id, sweep_id)
    if is_server(tracking_uri):
        base = tracking_uri.rstrip("/")
        return RecordLocation(runs_url(base, experiment_id, sweep_id, metric, view) if experiment_id else base)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    command = shlex.join([str(mlflow_bin), "ui", "--backend-store-uri", tracking_uri, "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    return RecordLocation(runs_url(base, experiment_id, sweep_id, metric, view) if experiment_id else base, command)
