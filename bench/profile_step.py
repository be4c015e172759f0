#!/usr/bin/env python
"""Profile one PGD distillation step of the tiny pair (atss_tiny -> atss_tiny, 160 px) with
``torch.profiler``: self CPU time by op, and inclusive time by our function (each wrapped in
a ``record_function`` range by this script, nothing changed in the package).

    python bench/profile_step.py [--steps 10] [--threads 1] [--path batched|per_image]

``--path per_image`` profiles the reference per-image masks and per-level losses
(``PGD.reference``).
"""

from __future__ import annotations

import argparse
import functools

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from pgd.testing import total_loss

#: (module, attribute) pairs wrapped in a profiler range named after them
WRAPPED = [
    ("pgd.distill.methods.pgd", "batch_pgd_masks"),
    ("pgd.distill.methods.pgd", "per_image_pgd_masks"),
    ("pgd.distill.methods.pgd", "pgd_feature_losses"),
    ("pgd.distill.methods.pgd", "pgd_feature_losses_per_level"),
    ("pgd.core.pgd_method", "image_masks"),
    ("pgd.core.pgd_method", "quality_score"),
    ("pgd.core.pgd_method", "box_iou_pairs"),
    ("pgd.core.pgd_method", "foreground_weights"),
    ("pgd.core.pgd_method", "level_normalize"),
    ("pgd.core.pgd_method", "background_mask"),
    ("pgd.core.pgd_method", "inside_mask"),
    ("pgd.core.pgd_method", "batch_masks"),
    ("pgd.core.pgd_method", "pgd_cls_loss_terms"),
    ("pgd.core.pgd_method", "pgd_reg_loss_terms"),
    ("pgd.core.pgd_method", "pgd_cls_loss_levels"),
    ("pgd.core.pgd_method", "pgd_reg_loss_levels"),
]


def _wrap(name, fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        with record_function(f"pgd::{name}"):
            return fn(*a, **k)

    return inner


def instrument(dist):
    import importlib

    for mod_name, attr in WRAPPED:
        mod = importlib.import_module(mod_name)
        if hasattr(mod, attr):
            setattr(mod, attr, _wrap(attr, getattr(mod, attr)))
    a = dist.t_adapter
    for obj, attr in ((a, "predictions"), (a, "priors"), (dist, "teacher_forward"), (dist.kd, "forward")):
        setattr(obj, attr, _wrap(f"{type(obj).__name__}.{attr}", getattr(obj, attr)))
    orig_student_loss = dist.student.loss
    dist.student.loss = _wrap("student.loss", orig_student_loss)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--path", default="batched", choices=["batched", "per_image"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    import pgd.integration
    from pgd.testing import build_distiller, synthetic_batch

    MMLogger.get_instance("pgd_bench", log_level="WARNING")
    pgd.integration.init_scope()
    torch.manual_seed(0)
    dist = build_distiller("atss_tiny", "atss_tiny", 80)
    if args.path == "per_image":
        dist.kd.reference = True  # per-image masks, per-level losses
    instrument(dist)
    data = synthetic_batch(dist, args.images, 160, 160, boxes_per_image=8, num_classes=80)
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad()
        with record_function("pgd::distill_step.forward"):
            loss = total_loss(dist(**data, mode="loss"))
        with record_function("pgd::distill_step.backward"):
            loss.backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    ka = prof.key_averages()
    ours = sorted((e for e in ka if e.key.startswith("pgd::")), key=lambda e: -e.cpu_time_total)
    print(f"## {args.path}: {args.steps} steps, {args.threads} thread(s); inclusive CPU ms per step\n")
    print("| function | calls/step | ms/step |\n|---|---:|---:|")
    for e in ours:
        print(f"| {e.key[5:]} | {e.count / args.steps:.0f} | {e.cpu_time_total / 1e3 / args.steps:.2f} |")
    n_ops = sum(e.count for e in ka if e.key.startswith("aten::")) / args.steps
    print(f"\naten op calls per step (all nesting levels): {n_ops:.0f}")
    print("\n## top ops by self CPU time (ms per step)\n")
    ops = sorted((e for e in ka if not e.key.startswith("pgd::")), key=lambda e: -e.self_cpu_time_total)
    print("| op | calls/step | self ms/step |\n|---|---:|---:|")
    for e in ops[: args.rows]:
        print(f"| {e.key} | {e.count / args.steps:.0f} | {e.self_cpu_time_total / 1e3 / args.steps:.2f} |")


if __name__ == "__main__":
    main()
