"""Tables from MLflow without Ray: grouping, mean ± std over seeds, deltas against the plain
student of the same detector, Markdown/CSV/Parquet outputs, the best configuration."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pgd.reporting.tables import paper_table, runs_frame, write_outputs


def log_run(c, exp, sweep, role, params, metrics, status="FINISHED"):
    run = c.create_run(exp, tags={"pgd.sweep_id": sweep, "pgd.role": role})
    for k, v in params.items():
        c.log_param(run.info.run_id, k, v)
    for k, v in metrics.items():
        c.log_metric(run.info.run_id, k, v, step=3)
    c.log_dict(run.info.run_id, {"model": params.get("model"), "seed": params.get("seed")}, "resolved_config.yaml")
    c.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture()
def record(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    m = lambda ap: {"AP": ap, "AP50": ap + 20, "AP75": ap + 2, "APS": 1, "APM": 2, "APL": 3}  # noqa: E731
    log_run(c, exp, "s", "teacher", {"model": "atss_r101"}, m(45.5))
    for seed, ap in ((0, 39.0), (1, 40.0)):
        log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill": "None", "seed": seed}, m(ap))
        log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill.method": "pgd", "distill.strategy": "pgw",
                                       "seed": seed}, m(ap + 4.5))
    log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill.method": "pgd", "distill.strategy": "box",
                                   "seed": 0}, m(42.0))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill": "None", "seed": 0}, m(38.2))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill.method": "pgd", "distill.strategy": "pgw",
                                   "seed": 0}, m(42.5))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill.method": "fgd", "seed": 0}, m(0.0), status="FAILED")
    log_run(c, exp, "other", "trial", {"model": "atss_r50", "distill": "None", "seed": 0}, m(1.0))
    return uri


def test_runs_frame_reads_one_sweep(record):
    df = runs_frame(record, "e", "s")
    assert len(df) == 9  # the other sweep's run is not included
    assert set(df["method"]) == {"teacher", "student", "pgd", "fgd"}
    assert set(df["detector"]) == {"atss", "fcos"}


def test_paper_table_deltas_and_seed_statistics(record):
    df = runs_frame(record, "e", "s")
    table = paper_table(df, ["detector", "method"], {"method": "student"})
    f = table.frame.set_index(["detector", "method"])
    assert f.loc[("atss", "student"), "n"] == 2
    assert f.loc[("atss", "student"), "AP_mean"] == pytest.approx(39.5)
    assert f.loc[("atss", "student"), "AP_std"] == pytest.approx(math.sqrt(0.5))
    # pgw (39+4.5, 40+4.5) and box (42.0) both are "pgd" rows here: mean 43.667
    assert f.loc[("atss", "pgd"), "AP_mean"] == pytest.approx((43.5 + 44.5 + 42.0) / 3)
    assert f.loc[("atss", "pgd"), "AP_delta"] == pytest.approx((43.5 + 44.5 + 42.0) / 3 - 39.5)
    assert f.loc[("fcos", "pgd"), "AP_delta"] == pytest.approx(42.5 - 38.2)
    assert math.isnan(f.loc[("atss", "teacher"), "AP_delta"])
    assert ("fcos", "fgd") not in f.index  # failed runs are not in the table
    md = table.markdown("T")
    assert "| atss | student | 2 | 39.5±0.7 |" in md
    assert "| fcos | pgd | 1 | 42.5(+4.3) |" in md
    lines = md.splitlines()
    assert lines.index("| atss | teacher | 1 | 45.5 | 65.5 | 47.5 | 1.0 | 2.0 | 3.0 |") < \
        next(i for i, ln in enumerate(lines) if ln.startswith("| atss | student"))


def test_strategy_rows_compare_with_the_student(record, tmp_path):
    df = runs_frame(record, "e", "s")
    table = paper_table(df[df["detector"] == "atss"], ["detector", "method", "distill.strategy"],
                        {"method": "student"})
    f = table.frame
    box = f[f["distill.strategy"] == "box"].iloc[0]
    assert box["AP_delta"] == pytest.approx(42.0 - 39.5)
    pgw = f[f["distill.strategy"] == "pgw"].iloc[0]
    assert pgw["AP_mean"] == pytest.approx(44.0) and pgw["AP_delta"] == pytest.approx(4.5)
    paths = write_outputs(table, tmp_path / "out", "strategies")
    assert pd.read_csv(paths["csv"]).shape[0] == len(f)
    back = pd.read_parquet(paths["parquet"])
    assert list(back["distill.strategy"].fillna("-")) == list(f["distill.strategy"].fillna("-").astype(str))
