"""What the MLflow UI shows of a sweep, recorded without Ray through the driver's own tracking
functions (pgd.testing.record_sweep) on a SQLite store: a model-training experiment with its
description, readable child runs with dataset inputs, source and git commit, their log file
and checkpoint path, and a parent run whose headline metrics already compare the rows."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

SPACE = """
name: rec
description: tiny record for the UI
base:
  model: atss_tiny
  data:
    kind: shapes
    shapes: {train: 4, val: 2, size: 64, seed: 0}
  schedule: {epochs: 3, batch_size: 2, base_lr: 0.02, base_batch_size: 16, warmup_iters: 1,
             lr_steps: [3], img_scale: [64, 64], num_workers: 0}
teacher:
  model: atss_tiny
  train: {}
grid:
  method: [student, pgd]
seeds: [0, 1]
resources: {workers_per_trial: 1, cpus_per_worker: 1, trial_driver_cpus: 0.125}
report:
  rows: [detector, method]
  baseline: {method: student}
"""


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    from pgd.testing import record_sweep

    tmp = tmp_path_factory.mktemp("rec")
    mp = pytest.MonkeyPatch()
    mp.setenv("PGD_HOME", str(tmp / "home"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = tmp / "rec.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = record_sweep(space, uri)
    out.update(uri=uri, space=space)
    yield out
    mp.undo()


def _client(rec):
    from mlflow.tracking import MlflowClient

    return MlflowClient(rec["uri"])


def test_experiment_is_model_training_with_a_description(rec):
    exp = _client(rec).get_experiment(rec["experiment_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    note = exp.tags["mlflow.note.content"]
    assert note.startswith("tiny record for the UI")
    assert f"python pipelines/sweep.py --space {rec['space']}" in note
    assert str(Path(rec["plan"].sweep_dir) / "report") in note


def test_child_runs_readable_with_dataset_source_and_files(rec):
    c = _client(rec)
    plan = rec["plan"]
    names = set()
    for t in plan.trials:
        run = c.get_run(rec["runs"][t.key])
        names.add(run.info.run_name)
        assert run.info.run_name == t.name
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "pipelines/sweep.py"
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["mlflow.parentRunId"] == rec["parent_run_id"]
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"train", "val"}
        for split, ann in (("train", t.run.data.train_ann), ("val", t.run.data.val_ann)):
            ds = inputs[split]
            assert ds.name == f"shapes:{Path(t.run.data.root).name}"
            assert ds.digest == hashlib.sha256(Path(ann).read_bytes()).hexdigest()[:10]
        assert inputs["train"].digest != inputs["val"].digest
        arts = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert {"logs", "checkpoint.txt", "resolved_config.yaml"} <= arts
        assert [a.path for a in c.list_artifacts(run.info.run_id, "logs")] == ["logs/20260101_000000.log"]
        txt = Path(c.download_artifacts(run.info.run_id, "checkpoint.txt", str(Path(t.run.work_dir)))).read_text()
        assert txt.strip() == str(Path(t.run.work_dir) / "epoch_3.pth")
        # one point per epoch: the closing report does not repeat its epoch's values
        assert [m.step for m in c.get_metric_history(run.info.run_id, "AP")] == [1, 2, 3]
        assert [m.step for m in c.get_metric_history(run.info.run_id, "AP50")] == [3]
    assert names == {"student seed=0", "student seed=1", "pgd seed=0", "pgd seed=1"}


def test_parent_run_headline_metrics_table_and_plan(rec):
    from pgd.reporting.mlflow_ui import metric_key

    c = _client(rec)
    parent = c.get_run(rec["parent_run_id"])
    m = parent.data.metrics
    # fake AP at epoch 3: 19 (+4 for pgd) + 0.5 * seed -> student 19.25, pgd 23.25 (mean of 2 seeds)
    assert m["AP/atss student"] == pytest.approx(19.25)
    assert m["AP/atss pgd"] == pytest.approx(23.25)
    assert m["best_row_AP"] == pytest.approx(23.25)
    assert m["best_AP"] == pytest.approx(23.5)
    assert parent.data.tags["pgd.best_row"] == "atss pgd"
    assert "| atss | pgd | 2 |" in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["mlflow.source.name"] == "pipelines/sweep.py"
    arts = {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/table.png", "report/curves.png"} <= arts
    assert "plan.yaml" in {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert metric_key("AP/pgd strategy=pgw, k=9") == "AP/pgd strategy_pgw_ k_9"
    assert metric_key("/a//b/../c:") == "a/b/._/c_"


def test_record_location_server_url_or_mlflow_ui_command(rec):
    from pgd.reporting.mlflow_ui import record_location

    sid, exp = rec["plan"].sweep_id, rec["experiment_id"]
    srv = record_location("http://10.0.0.5:5000/", exp, sid)
    assert srv.command is None
    assert srv.url.startswith(f"http://10.0.0.5:5000/#/experiments/{exp}/runs?searchFilter=tags.%60pgd.sweep_id%60")
    assert "ui --backend-store-uri http" not in srv.describe()
    local = record_location(rec["uri"], exp, sid)
    assert local.command.endswith(f"ui --backend-store-uri {rec['uri']} --port 5000")
    assert local.url.startswith(f"http://127.0.0.1:5000/#/experiments/{exp}/runs?")
    assert local.command in local.describe() and local.url in local.describe()


def test_report_open_prints_the_runs_url(rec, capsys, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
    import report as cli

    monkeypatch.setenv("PGD_HOME", str(Path(rec["plan"].home)))
    assert cli.main(["--space", str(rec["space"]), "--tracking-uri", rec["uri"], "--open"]) == 0
    out = capsys.readouterr().out
    assert f"/#/experiments/{rec['experiment_id']}/runs?viewStateShareKey=pgd-{rec['plan'].sweep_id}" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out


def test_saved_view_of_the_sweep(rec):
    import json

    exp = _client(rec).get_experiment(rec["experiment_id"])
    view = json.loads(exp.tags[f"mlflow.sharedViewState.pgd-{rec['plan'].sweep_id}"])
    assert view["searchFilter"] == f"tags.`pgd.sweep_id` = '{rec['plan'].sweep_id}'"
    assert view["orderByKey"] == "metrics.`AP`" and view["orderByAsc"] is False
    assert {"attributes.`Dataset`", "metrics.`AP`", "metrics.`AP50`", "tags.`pgd.method`"} <= set(view["selectedColumns"])


def test_system_metrics_off_with_the_reason(monkeypatch):
    import importlib.util

    from pgd.sweep.system_metrics import trial_system_metrics, unavailable

    assert unavailable(None) == "no tracking URI in the trial's context"
    assert unavailable({"uri": "sqlite:///x"}, {"PGD_SYSTEM_METRICS": "0"}) == "PGD_SYSTEM_METRICS=0"
    if importlib.util.find_spec("psutil") is None:
        assert "psutil is not installed" in unavailable({"uri": "sqlite:///x"}, {})
    with trial_system_metrics(None, "t000") as reason:
        assert reason


def test_restarted_trial_does_not_duplicate_history(rec):
    """A driver restored after ``ray job stop`` gets its finished trial's reports again (Tune
    restarts a trial whose end it had not saved): a fresh callback, as in the new driver, finds
    the run by its plan key and logs nothing already there; a new epoch is still logged."""
    from types import SimpleNamespace

    from pgd.sweep import tracking as T

    c = _client(rec)
    plan = rec["plan"]
    t = plan.trials[0]
    rid = rec["runs"][t.key]
    before = {k: [(m.step, m.value) for m in c.get_metric_history(rid, k)] for k in ("AP", "AP50")}
    cb = T.MLflowSweepCallback(rec["uri"], rec["experiment_id"], rec["parent_run_id"], plan.sweep_id)
    trial = SimpleNamespace(config={"trial": t.dump()}, trial_id="restored_00000", status="RUNNING",
                            error_file=None)
    cb.on_trial_start(0, [], trial)
    assert cb.run_id(trial) == rid
    for e in (2, 3):
        cb.on_trial_result(0, [], trial, {"epoch": e, "AP": 99.0})
    cb.on_trial_result(0, [], trial, {"epoch": 3, "final": 1, "AP": 99.0, "AP50": 99.0})
    after = {k: [(m.step, m.value) for m in c.get_metric_history(rid, k)] for k in ("AP", "AP50")}
    assert after == before
    cb.on_trial_result(0, [], trial, {"epoch": 4, "AP": 50.0})  # a later epoch is new: logged
    assert [m.step for m in c.get_metric_history(rid, "AP")] == [1, 2, 3, 4]
