#!/usr/bin/env python
"""Build a sweep's paper-style table from MLflow alone (also run at the end of every sweep).

    python pipelines/report.py --space search_spaces/smoke.yaml
    python pipelines/report.py --space search_spaces/table1.yaml --name table1 \\
        --tracking-uri http://mlflow:5000 --out reports/table1
Writes Markdown (printed), CSV and Parquet, logs them to the sweep's parent run, and exports
the best configuration as YAML. ``--open`` only prints where to look: the URL of the sweep's
runs page (on a tracking server), or the ``mlflow ui`` command and the URL it will serve.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="the sweep's space file (rows, baseline, metric)")
    p.add_argument("--name", help="sweep id (default: the one pipelines/sweep.py derives from the space file)")
    p.add_argument("--tracking-uri")
    p.add_argument("--out", help="output folder (default: <home>/sweeps/<name>/report)")
    p.add_argument("--open", action="store_true",
                   help="only print the URL of the sweep's runs page (and, for a SQLite store, the "
                        "`mlflow ui` command that serves it); builds nothing")
    args = p.parse_args(argv)
    from pgd.config.space import load_space
    from pgd.paths import home
    from pgd.plan.plan import sweep_id_of
    from pgd.reporting.report import report_sweep
    from pgd.sweep.tracking import TAG_ROLE, TAG_SWEEP, client, default_tracking_uri, find_run

    spec, text = load_space(args.space)
    name = args.name or sweep_id_of(spec, text)
    uri = args.tracking_uri or default_tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(spec.name)
    parent = find_run(c, exp.experiment_id, {TAG_SWEEP: name, TAG_ROLE: "sweep"}) if exp else None
    if args.open:
        from pgd.reporting.mlflow_ui import record_location

        print(record_location(uri, exp.experiment_id if exp else None, name, metric=spec.metric, client=c).describe())
        return 0
    out = Path(args.out) if args.out else home() / "sweeps" / name / "report"
    report_sweep(uri, spec, name, parent_run_id=parent.info.run_id if parent else None, out_dir=out)
    return 0


if __name__ == "__main__":
    run_main(main)
