#!/usr/bin/env python
"""Train and evaluate one registry detector (or, with a ``distill`` section, a distillation).

Examples:
    python pipelines/train.py --model atss_tiny --epochs 6 --work-dir runs/atss_tiny
    python pipelines/train.py --config run.yaml --set schedule.batch_size=4
    python pipelines/train.py --model atss_r50 --data coco --data-root /data/coco \\
        --backbone-checkpoint /weights/resnet50.pth --set schedule.epochs=12
    python pipelines/train.py --config run.yaml --eval-only runs/x/best_coco_AP_epoch_6.pth
Relative paths resolve under $PGD_HOME (default: the project folder). Every input (config,
data, checkpoints, the work dir) is checked before training starts; a work dir holding
another run, or a data set made with other parameters, is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_set_argument, apply_sets, load_yaml, run_main  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="run config YAML (keys of pgd.config.run.RunConfig)")
    p.add_argument("--model", help="registry name <detector>_<backbone>, e.g. atss_tiny")
    p.add_argument("--data", choices=["shapes", "coco", "crowdhuman"], help="data kind")
    p.add_argument("--data-root", help="dataset folder (COCO layout)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--work-dir")
    p.add_argument("--seed", type=int)
    p.add_argument("--backbone-checkpoint")
    p.add_argument("--no-resume", action="store_true", help="start over (with --overwrite when the work "
                                                            "dir already holds this run's checkpoints)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --work-dir / --data-root hold (another run, a data set made with "
                        "other parameters) instead of refusing")
    p.add_argument("--eval-only", metavar="CHECKPOINT", help="only evaluate this checkpoint")
    add_set_argument(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from pgd.config.run import parse_run

    cfg = load_yaml(args.config)
    for key, value in (("model", args.model), ("work_dir", args.work_dir), ("seed", args.seed),
                       ("backbone_checkpoint", args.backbone_checkpoint),
                       ("data.kind", args.data), ("data.root", args.data_root),
                       ("schedule.epochs", args.epochs)):
        if value is not None:
            apply_sets(cfg, [f"{key}={json.dumps(value)}"])
    if args.no_resume:
        cfg["resume"] = False
    apply_sets(cfg, args.set)
    run = parse_run(cfg, args.config or "command line")
    if args.eval_only:
        from pgd.paths import resolve
        from pgd.training import evaluate

        metrics = evaluate(run, str(resolve(args.eval_only)))
    else:
        from pgd.training import train

        metrics = train(run, overwrite=args.overwrite)
    from pgd.reporting.text import metrics_table

    print(metrics_table({run.model: metrics}))
    return 0


if __name__ == "__main__":
    run_main(main)
