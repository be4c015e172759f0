"""The end of every sweep (and ``pipelines/report.py``): the paper-style table from MLflow,
written as Markdown (printed, with its statistics footer), CSV and Parquet, the table as a bar
chart and the per-epoch learning curves as PNGs, all logged to the sweep's parent run under
``report/``, and the best configuration exported as YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from pgd.reporting import stats as S
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
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        print(f"open the record: {mlflow_bin} ui --backend-store-uri {tracking_uri} --port 5000  "
              "(then http://127.0.0.1:5000)")
    return dict(table=table, markdown=md, paths=paths, runs=df)


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
