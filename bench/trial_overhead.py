#!/usr/bin/env python
"""What a trial costs besides training: the same tiny sweep run with the two trial launchers,
alternating, in one run of this script (issue 9, section 4).

    python bench/trial_overhead.py                  # 3 rounds x 2 launchers x 2 trials
    python bench/trial_overhead.py --rounds 2 --trials 4

Each sweep is ``pipelines/sweep.py`` on a local Ray cluster (2 CPUs), a fresh process per
sweep, with trials that train almost nothing (4 shapes images at 64 px, 1 epoch, 2 val images)
so that a trial's wall time is its fixed cost: the Tune trial actor, (Ray Train: the
controller, the worker group, the process group), the imports, the mmengine Runner and the
dataset set-up, the evaluation and the checkpoint report, the MLflow record. The launchers:

- ``train``: every trial runs a Ray Train ``TorchTrainer`` (``resources.inline_single_worker:
  false``; what every trial did before);
- ``inline``: a one-worker trial trains in its Tune trial process (the default).

Per trial: wall = the MLflow tag ``pgd.duration_s`` (trial start to end, as the driver saw it),
training = the summed ``seconds`` of its ``train_epoch`` events, fixed = wall - training. Also
checks that both launchers give the same final metrics for the same seed (they run the same
training in one process). Prints a Markdown table; timings on a shared machine are noisy, so
compare the two rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = {"train": False, "inline": True}  # name -> resources.inline_single_worker

SPACE = """
name: {name}
base:
  model: atss_tiny
  data:
    kind: shapes
    shapes: {{train: 4, val: 2, size: 64, seed: 0}}
  schedule: {{epochs: 1, batch_size: 2, base_lr: 0.02, base_batch_size: 16, warmup_iters: 1,
             lr_steps: [1], img_scale: [64, 64], num_workers: 0, log_interval: 50}}
grid:
  method: [student]
seeds: {seeds}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.875, trial_driver_cpus: 0.125, num_cpus: 2,
            inline_single_worker: {inline}}}
report: {{rows: [method]}}
"""


def run_sweep(home: Path, name: str, inline: bool, n_trials: int) -> float:
    space = home / f"{name}.yaml"
    space.write_text(textwrap.dedent(SPACE.format(name=name, seeds=list(range(n_trials)),
                                                  inline=str(inline).lower())))
    env = {**os.environ, "PGD_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "pipelines" / "sweep.py"), "--space", str(space)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.time() - t0


def trial_costs(home: Path, name: str) -> list[dict]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    rows = []
    for r in c.search_runs([exp.experiment_id]):
        if r.data.tags.get("pgd.role") != "trial":
            continue
        wall = float(r.data.tags["pgd.duration_s"])
        events = [json.loads(line) for line in
                  (Path(r.data.tags["pgd.work_dir"]) / "metrics.jsonl").read_text().splitlines() if line.strip()]
        training = sum(e.get("seconds", 0.0) for e in events if e.get("event") == "train_epoch")
        rows.append(dict(seed=r.data.params.get("seed", r.info.run_name), wall=wall, training=training,
                         fixed=wall - training, AP=r.data.metrics.get("AP"),
                         loss=r.data.metrics.get("train.loss")))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (train, inline) sweeps, alternating")
    ap.add_argument("--trials", type=int, default=2, help="trials per sweep (two run side by side on 2 CPUs)")
    ap.add_argument("--home", default=None, help="PGD_HOME for the sweeps (default: a temporary folder)")
    args = ap.parse_args(argv)
    home = Path(args.home or tempfile.mkdtemp(prefix="pgd-trial-overhead-"))
    home.mkdir(parents=True, exist_ok=True)
    per = {k: [] for k in LAUNCHERS}
    sweep_wall = {k: [] for k in LAUNCHERS}
    metrics = {k: {} for k in LAUNCHERS}
    for rnd in range(args.rounds):
        order = list(LAUNCHERS) if rnd % 2 == 0 else list(reversed(LAUNCHERS))  # alternate who goes first
        for launcher in order:
            name = f"oh-{launcher}-{rnd}"
            wall = run_sweep(home, name, LAUNCHERS[launcher], args.trials)
            rows = trial_costs(home, name)
            per[launcher] += rows
            sweep_wall[launcher].append(wall)
            for r in rows:
                metrics[launcher].setdefault(r["seed"], set()).add((r["AP"], round(r["loss"], 6)))
            print(f"round {rnd + 1}/{args.rounds} {launcher:6s}: sweep {wall:5.1f} s, trials "
                  + ", ".join(f"{r['wall']:.1f} s" for r in rows), flush=True)

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    print("\n| launcher | trials | sweep wall (median) | trial wall (median) | training | fixed cost per trial |")
    print("|---|---:|---:|---:|---:|---:|")
    fixed = {}
    for k in LAUNCHERS:
        fixed[k] = med([r["fixed"] for r in per[k]])
        print(f"| {k} | {len(per[k])} | {med(sweep_wall[k]):.1f} s | {med([r['wall'] for r in per[k]]):.1f} s | "
              f"{med([r['training'] for r in per[k]]):.2f} s | {fixed[k]:.1f} s |")
    print(f"\nfixed cost inline / train: {fixed['inline'] / fixed['train']:.2f}")
    same = metrics["train"] == metrics["inline"] and all(len(v) == 1 for v in metrics["train"].values())
    print("same final metrics per seed under both launchers:", "yes" if same else f"NO: {metrics}")
    print(f"(sweeps under {home})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
