"""The end of every sweep (and ``pipelines/report.py``): the paper-style table from MLflow,
written as Markdown (printed, with its statistics footer), CSV and Parquet, the table as a bar
chart and the per-epoch learning curves as PNGs, all logged to the sweep's parent run under
``report/``, and the best configuration exported as YAML."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from pgd.reporting import stats as S
from pgd.reporting.mlflow_ui import headline_metrics, record_location, save_sweep_view
from pgd.reporting.tables import (
    ALPHA,
    best_run,
    diagnostic_columns,
    paper_table,
    runs_frame,
    write_outputs,
)


def report_sweep(tracking_uri: str, spec, sweep_id: str | None, *, parent_run_id: str | None,
                 out_dir: str | Path, quiet: bool = False) -> dict:
    from pgd.sweep.tracking import client

    df = runs_frame(tracking_uri, spec.name, sweep_id)
    rep = spec.report
    # alpha / correction / test: report-section settings when the space schema has them
    columns = list(rep.columns) + ([c for c in diagnostic_columns(df) if c not in rep.columns]
                                   if getattr(rep, "diagnostics", False) else [])
    table = paper_table(df, list(rep.rows), dict(rep.baseline), columns,
                        alpha=getattr(rep, "alpha", ALPHA), correction=getattr(rep, "correction", S.CORRECTION_HOLM),
                        test=getattr(rep, "test", S.TEST_T))
    title = rep.title or f"{spec.name}: {spec.description}".rstrip(": ")
    paths = write_outputs(table, out_dir, title)
    c = client(tracking_uri)
    metric = spec.metric if spec.metric in table.columns else table.metric
    if len(table.frame) and metric in table.columns:
        paths.update(write_figures(c, table, out_dir, metric, title))
    best = best_run(df, spec.metric, spec.mode) if not df.empty else None
    best_path = None
    if best is not None:
        resolved = _download_resolved(c, best["run_id"])
        best_path = Path(out_dir) / "best_config.yaml"
        best_path.write_text(yaml.safe_dump(resolved, sort_keys=False))
        paths["best_config"] = str(best_path)
    if parent_run_id:
        for p in paths.values():
            c.log_artifact(parent_run_id, p, "report")
        if best is not None:
            c.set_tag(parent_run_id, "pgd.best_run", best["run_id"])
        log_headline(c, parent_run_id, table, metric, best, spec.metric, table.markdown(title))
    exp = c.get_experiment_by_name(spec.name)
    if exp is not None and sweep_id:
        save_sweep_view(c, exp.experiment_id, sweep_id, spec.metric, [m for m in rep.columns if m in df])
    failed = df[df["status"] == "FAILED"] if not df.empty else df
    md = table.markdown(title)
    if not quiet:
        print("\n" + md + "\n", flush=True)
        if not failed.empty:
            print("failed trials:")
            for _, r in failed.iterrows():
                print(f"  {r['run_name']}: {r.get('error')}")
        if best is not None:
            print(f"best {spec.metric}: {best[spec.metric]:.1f} ({best['run_name']}); config: {best_path}")
        print(f"tables: {paths['markdown']}, {paths['csv']}, {paths['parquet']}")
        if "figure_table" in paths:
            print(f"figures: {paths['figure_table']}, {paths['figure_curves']}")
        loc = record_location(tracking_uri, exp.experiment_id if exp else None, sweep_id,
                              metric=spec.metric, client=c)
        print(loc.describe(), flush=True)
    return dict(table=table, markdown=md, paths=paths, runs=df)


NOTE_CHARS = 7900  # MLflow refuses run tags over 8000 characters


def log_headline(c, parent_run_id: str, table, metric: str, best, best_metric: str, markdown: str) -> None:
    """The parent run's headline, so the collapsed runs list already compares: each row's mean
    ``metric`` (``<metric>/<row>``), ``best_row_<metric>`` (tag ``pgd.best_row`` names it), the
    best single run's ``best_<metric>``; and the table as the run's description."""
    from mlflow.entities import Metric

    from pgd.reporting.mlflow_ui import BEST_ROW_TAG, NOTE_TAG, metric_key

    values, best_row = headline_metrics(table, metric)
    if best is not None and best.get(best_metric) is not None:
        values[metric_key(f"best_{best_metric}")] = float(best[best_metric])
    now = int(time.time() * 1000)
    if values:
        c.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    if best_row:
        c.set_tag(parent_run_id, BEST_ROW_TAG, best_row)
    c.set_tag(parent_run_id, NOTE_TAG, markdown if len(markdown) <= NOTE_CHARS else
              markdown[:NOTE_CHARS] + "\n\n(cut: the whole table is report/table.md)")


def write_figures(c, table, out_dir, metric: str, title: str | None = None) -> dict:
    """The table as a bar chart (``table.png``) and the learning curves of its rows from the
    MLflow metric histories (``curves.png``); returns their paths."""
    from pgd.reporting.figures import bar_chart, learning_curves, metric_histories

    out = Path(out_dir)
    bars, curves = out / "table.png", out / "curves.png"
    bar_chart(table, metric, bars, title=f"{title}: {metric} per row" if title else None)
    histories = metric_histories(c, table.runs["run_id"], metric)
    learning_curves(table, histories, metric, curves)
    return {"figure_table": str(bars), "figure_curves": str(curves)}


def _download_resolved(c, run_id: str) -> dict:
    import os
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, "resolved_config.yaml", tmp)
        return yaml.safe_load(Path(local).read_text())
