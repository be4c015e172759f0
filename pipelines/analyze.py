#!/usr/bin/env python
"""Analysis tools: the paper's figures and tables from trained checkpoints (docs/analyses.md).

Runs are named ``--run NAME CONFIG CHECKPOINT`` (the run-config YAML the checkpoint was
trained with; a distilled student's config works as is), repeated for several runs. Every
subcommand but the single quality map writes PNG + CSV + JSON into ``--out-dir`` and, with
``--mlflow-run-id`` (and ``--tracking-uri``), logs them to that MLflow run.

quality-map  one teacher, one image: [image + GT | quality | strategy mask] (legacy mode,
             ``--config/--checkpoint``); with ``--run`` (one per detector): paper Fig. 2,
             one row per detector, max over FPN levels
mask-out     AP after removing each GT box's top-X% quality prior positions before NMS, and
             a random control (paper Fig. 3)
detections   GT | run 1 | run 2 ... detections side by side (paper Fig. 5)
tide         TIDE error breakdown of several runs on one val set (paper Fig. 6)
lrp          optimal LRP and its components (paper Table 9)

    python pipelines/analyze.py quality-map --config teacher_run.yaml \\
        --checkpoint runs/teacher/best_coco_AP_epoch_12.pth --image-index 3 --out quality.png
    python pipelines/analyze.py quality-map --run atss atss.yaml atss.pth --run gfl gfl.yaml \\
        gfl.pth --image-index 0 1 2 --out-dir figs
    python pipelines/analyze.py mask-out --run teacher t.yaml t.pth --percents 0 1 5 20 --out-dir figs
    python pipelines/analyze.py detections --run student s.yaml s.pth --run PGD p.yaml p.pth \\
        --image-index 0 1 --score-thr 0.3 --out-dir figs
    python pipelines/analyze.py tide --run student s.yaml s.pth --run PGD p.yaml p.pth --out-dir figs
    python pipelines/analyze.py lrp --run student s.yaml s.pth --run PGD p.yaml p.pth \\
        --out-dir figs --mlflow-run-id 0123abcd --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_set_argument, apply_sets, load_yaml, run_main  # noqa: E402


def _common(p: argparse.ArgumentParser, *, runs: bool = True) -> None:
    if runs:
        p.add_argument("--run", nargs=3, action="append", metavar=("NAME", "CONFIG", "CHECKPOINT"),
                       help="a run to analyse: label, run-config YAML, checkpoint (repeatable)")
    p.add_argument("--out-dir", default="analysis", help="folder for the PNG / CSV / JSON")
    p.add_argument("--mlflow-run-id", help="log the written files to this MLflow run")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                   "or sqlite:///<home>/mlflow.db)")
    add_set_argument(p)


def _images(p: argparse.ArgumentParser, default) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--image-index", type=int, nargs="+", default=list(default),
                   help="positions in the split")
    g.add_argument("--image-id", type=int, nargs="+", help="COCO image ids")


def _loaders(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument("--num-workers", type=int, help="data-loading processes (default: the run's)")


def parse_args(argv=None):
    from pgd.reporting.analyses import (
        DEFAULT_PERCENTS,
        DETECTION_IMAGES,
        DETECTION_SCORE_THR,
        QUALITY_XI,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality-map", help="teacher quality heatmaps (paper Fig. 2)")
    q.add_argument("--config", help="single mode: the teacher's run config YAML")
    q.add_argument("--model", help="single mode: registry name of the teacher, e.g. atss_tiny")
    q.add_argument("--data", choices=["shapes", "coco", "crowdhuman"])
    q.add_argument("--data-root")
    q.add_argument("--checkpoint", help="single mode: the teacher's checkpoint (.pth)")
    q.add_argument("--split", choices=["train", "val"], default="val")
    _images(q, (0,))
    q.add_argument("--strategy", default="pgw", help="single mode: the foreground strategy drawn")
    q.add_argument("--k", type=int, help="single mode: top-K (default: the detector's)")
    q.add_argument("--xi", type=float, default=QUALITY_XI)
    q.add_argument("--topk-scope", default="inside", choices=["inside", "all"])
    q.add_argument("--out", default="quality_map.png", help="single mode: the PNG")
    _common(q)

    m = sub.add_parser("mask-out", help="AP after removing top-X%% quality positions (paper Fig. 3)")
    m.add_argument("--percents", type=float, nargs="+", default=list(DEFAULT_PERCENTS),
                   help="mask-out ratios X in %% (default: %(default)s)")
    m.add_argument("--xi", type=float, default=QUALITY_XI, help="quality exponent of Eq. 1")
    m.add_argument("--seed", type=int, default=0, help="seed of the random control")
    _loaders(m)
    _common(m)

    d = sub.add_parser("detections", help="GT vs runs' detections side by side (paper Fig. 5)")
    _images(d, DETECTION_IMAGES)
    d.add_argument("--score-thr", type=float, default=DETECTION_SCORE_THR)
    _common(d)

    t = sub.add_parser("tide", help="TIDE error breakdown (paper Fig. 6)")
    t.add_argument("--pos-thr", type=float, help="TIDE foreground IoU (default 0.5)")
    t.add_argument("--bg-thr", type=float, help="TIDE background IoU (default 0.1)")
    t.add_argument("--detections", nargs=2, action="append", metavar=("NAME", "JSON"),
                   help="use this COCO results file for run NAME instead of running it")
    _loaders(t)
    _common(t)

    r = sub.add_parser("lrp", help="optimal LRP and components (paper Table 9)")
    r.add_argument("--tau", type=float, help="TP IoU threshold (default 0.5)")
    r.add_argument("--detections", nargs=2, action="append", metavar=("NAME", "JSON"))
    _loaders(r)
    _common(r)
    return p.parse_args(argv)


def _runs(args) -> list:
    from pgd.errors import ConfigError
    from pgd.reporting.analyses import RunRef

    if not args.run:
        raise ConfigError(f"{args.command}: give at least one --run NAME CONFIG CHECKPOINT")
    given = dict(getattr(args, "detections", None) or [])
    names = [n for n, _, _ in args.run]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"--detections names {unknown} match no --run (runs: {names})")
    out = []
    for name, config, checkpoint in args.run:
        cfg = apply_sets(load_yaml(config), args.set)
        out.append(RunRef(name=name, run_config=cfg, checkpoint=checkpoint, detections=given.get(name)))
    return out


def single_quality_map(args) -> int:
    import torch

    from pgd.config.defaults import pgd_defaults
    from pgd.errors import ConfigError
    from pgd.reporting.quality_map import render_quality_map
    from pgd.training.predict import load_detector

    if not args.checkpoint:
        raise ConfigError("quality-map: give --checkpoint (single mode) or --run NAME CONFIG CHECKPOINT")
    cfg = load_yaml(args.config)
    for key, value in (("model", args.model), ("data.kind", args.data), ("data.root", args.data_root)):
        if value is not None:
            apply_sets(cfg, [f"{key}={json.dumps(value)}"])
    apply_sets(cfg, args.set)
    det = load_detector(cfg, args.checkpoint, device="cpu")
    dataset = det.figure_dataset(args.split)
    if args.image_id is not None:
        ids = [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))]
        if args.image_id[0] not in ids:
            raise ConfigError(f"image id {args.image_id[0]} is not in the {args.split} split")
        index = ids.index(args.image_id[0])
    else:
        index = args.image_index[0]
    if not 0 <= index < len(dataset):
        raise ConfigError(f"--image-index {index} is outside 0..{len(dataset) - 1}")
    k = args.k or pgd_defaults(det.detector, det.run.data.kind)["k"]
    strategy = dict(detector=det.detector, strategy=args.strategy, xi_cls=args.xi, xi_reg=0.6, k_cls=k,
                    k_reg=k, topk_scope=args.topk_scope, strategy_params={})
    with torch.no_grad():
        info = render_quality_map(det.model, dataset, index, strategy, args.out,
                                  title=f"{det.run.model} | {args.strategy} K={k} xi={args.xi}")
    if args.mlflow_run_id:
        from pgd.reporting.analyses import ARTIFACT_ROOT, log_to_mlflow

        log_to_mlflow(dict(png=args.out), run_id=args.mlflow_run_id, tracking_uri=args.tracking_uri,
                      artifact_path=f"{ARTIFACT_ROOT}/quality-map")
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from pgd.reporting import analyses as A

    common = dict(tracking_uri=args.tracking_uri, mlflow_run_id=args.mlflow_run_id)
    if args.command == "quality-map":
        if not args.run:
            return single_quality_map(args)
        from pgd.errors import ConfigError

        if args.config or args.checkpoint:
            raise ConfigError("quality-map: use either --config/--checkpoint (one teacher) or --run")
        paths = A.quality_maps(_runs(args), args.out_dir, image_indices=args.image_index,
                               image_ids=args.image_id, split=args.split, xi=args.xi, **common)
    elif args.command == "mask-out":
        paths = A.mask_out(_runs(args), args.out_dir, percents=args.percents, xi=args.xi, seed=args.seed,
                           batch_size=args.batch_size, num_workers=args.num_workers, **common)
    elif args.command == "detections":
        paths = A.detections(_runs(args), args.out_dir, image_indices=args.image_index,
                             image_ids=args.image_id, score_thr=args.score_thr, **common)
    elif args.command == "tide":
        paths = A.tide(_runs(args), args.out_dir, pos_thr=args.pos_thr, bg_thr=args.bg_thr,
                       batch_size=args.batch_size, num_workers=args.num_workers, **common)
    elif args.command == "lrp":
        paths = A.lrp(_runs(args), args.out_dir, tau=args.tau, batch_size=args.batch_size,
                      num_workers=args.num_workers, **common)
    else:  # pragma: no cover (argparse rejects other names)
        return 2
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
