#!/usr/bin/env python
"""Run a sweep: Ray Tune (grid or Optuna, optional ASHA) over Ray Train trials, recorded in
MLflow, ending with the paper-style comparison table.

Laptop (embedded defaults: local Ray, MLflow in <home>/mlflow.db, built-in shapes data, CPU):
    python pipelines/sweep.py                       # search_spaces/smoke.yaml
    python pipelines/sweep.py --space search_spaces/table5.yaml --dry-run
Cluster:
    ray job submit --working-dir . --runtime-env-json '{"env_vars": {"PGD_HOME": "/shared/pgd"}}' \\
        -- python pipelines/sweep.py --space search_spaces/table5.yaml --tracking-uri http://mlflow:5000
A sweep is identified by its space's name and the hash of the space file (or --name): running
the same file again resumes it (finished trials are not rerun), an edited file starts a new
sweep, --fresh starts a new one beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_main  # noqa: E402

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="search space YAML (default: smoke.yaml)")
    p.add_argument("--name", help="sweep id (default: <space name>-<hash of the space file>); "
                                  "same id = resume")
    p.add_argument("--home", help="platform home for data, caches, sweeps, mlflow.db (default: $PGD_HOME "
                                  "or the project folder)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                          "sqlite:///<home>/mlflow.db)")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a new local cluster)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="require an existing sweep to resume")
    g.add_argument("--fresh", action="store_true", help="start a new sweep named <name>-<timestamp>")
    p.add_argument("--dry-run", action="store_true", help="validate and print the trials, resources and "
                                                          "concurrency without starting Ray")
    p.add_argument("--verbose", action="store_true", help="show the workers' output (mmengine logs) on the "
                                                          "console too (default: <sweep>/logs/<trial>.log)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.home:
        os.environ["PGD_HOME"] = str(Path(args.home).expanduser().resolve())
    from pgd.sweep.driver import run_sweep

    space = str(Path(args.space).expanduser().resolve())
    name = args.name
    if args.fresh:
        from pgd.plan.plan import default_sweep_id

        name = f"{name or default_sweep_id(space)}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_sweep(space, name=name, tracking_uri=args.tracking_uri, address=args.address,
              resume="always" if args.resume else "auto", dry_run=args.dry_run,
              verbose=args.verbose)
    return 0


if __name__ == "__main__":
    run_main(main)
