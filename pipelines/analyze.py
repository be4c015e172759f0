#!/usr/bin/env python
"""Analysis tools.

quality-map: for one image and a teacher checkpoint, render the teacher's quality heatmap
(max over FPN levels, paper Fig. 2) and a foreground strategy's mask, over the image with its
GT boxes, as a PNG.

    python pipelines/analyze.py quality-map --config teacher_run.yaml \\
        --checkpoint runs/teacher/best_coco_AP_epoch_12.pth --image-index 3 \\
        --strategy pgw --out quality.png
    python pipelines/analyze.py quality-map --model atss_tiny --data coco \\
        --data-root ../shared/data/coco-tiny --checkpoint t.pth --image-id 139 --out q.png
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
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality-map", help="teacher quality heatmap + strategy mask for one image")
    q.add_argument("--config", help="the teacher's run config YAML (model, data, schedule)")
    q.add_argument("--model", help="registry name of the teacher, e.g. atss_tiny")
    q.add_argument("--data", choices=["shapes", "coco", "crowdhuman"])
    q.add_argument("--data-root")
    q.add_argument("--checkpoint", required=True, help="the teacher's checkpoint (.pth)")
    q.add_argument("--split", choices=["train", "val"], default="val")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--image-index", type=int, default=0, help="position in the split")
    g.add_argument("--image-id", type=int, help="COCO image id")
    q.add_argument("--strategy", default="pgw")
    q.add_argument("--k", type=int, help="top-K (default: the detector's)")
    q.add_argument("--xi", type=float, default=0.8)
    q.add_argument("--topk-scope", default="inside", choices=["inside", "all"])
    q.add_argument("--out", default="quality_map.png")
    add_set_argument(q)
    return p.parse_args(argv)


def quality_map(args) -> int:
    import torch
    from mmdet.registry import DATASETS, MODELS
    from mmengine.runner import load_checkpoint

    import pgd.integration
    from pgd.config.defaults import pgd_defaults
    from pgd.config.run import parse_run
    from pgd.detectors import parse_name
    from pgd.errors import ConfigError
    from pgd.reporting.quality_map import render_quality_map
    from pgd.training.build import build_config

    pgd.integration.init_scope()
    cfg = load_yaml(args.config)
    for key, value in (("model", args.model), ("data.kind", args.data), ("data.root", args.data_root)):
        if value is not None:
            apply_sets(cfg, [f"{key}={json.dumps(value)}"])
    apply_sets(cfg, args.set)
    cfg.pop("distill", None)
    run = parse_run(cfg, args.config or 'command line')
    mm = build_config(run)
    loader = mm.val_dataloader if args.split == "val" else mm.train_dataloader
    ds_cfg = dict(loader.dataset)
    # no augmentation, and GT boxes resized with the image (mmdet's test pipeline loads them
    # after the resize, in original-image coordinates, for evaluation)
    ds_cfg["pipeline"] = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=tuple(run.schedule.img_scale), keep_ratio=True),
        dict(type="PackDetInputs"),
    ]
    ds_cfg["test_mode"] = False if args.split == "train" else True
    dataset = DATASETS.build(ds_cfg)
    index = args.image_index
    if args.image_id is not None:
        ids = [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))]
        if args.image_id not in ids:
            raise ConfigError(f"image id {args.image_id} is not in the {args.split} split")
        index = ids.index(args.image_id)
    if not 0 <= index < len(dataset):
        raise ConfigError(f"--image-index {index} is outside 0..{len(dataset) - 1}")
    model = MODELS.build(mm.model)
    from pgd.paths import resolve

    load_checkpoint(model, str(resolve(args.checkpoint)), map_location="cpu", revise_keys=[(r"^module\.", ""), (r"^student\.", "")])
    model.eval()
    det, _ = parse_name(run.model)
    k = args.k or pgd_defaults(det, run.data.kind)["k"]
    strategy = dict(detector=det, strategy=args.strategy, xi_cls=args.xi, xi_reg=0.6, k_cls=k, k_reg=k,
                    topk_scope=args.topk_scope, strategy_params={})
    with torch.no_grad():
        info = render_quality_map(model, dataset, index, strategy, args.out,
                                  title=f"{run.model} | {args.strategy} K={k} xi={args.xi}")
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "quality-map":
        return quality_map(args)
    return 2


if __name__ == "__main__":
    run_main(main)
