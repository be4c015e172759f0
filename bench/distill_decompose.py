#!/usr/bin/env python
"""Where the tiny pair's distillation overhead goes, side by side in one process
(docs/performance.md, issue 14):

    python bench/distill_decompose.py [--repeat 60] [--threads 1]

Alternates, order rotated every round (``distill_step.alternate``): the baseline (student
step + teacher no-grad forward), the full PGD distillation step, and the same step with PGD's
work cut back in stages - no KD terms at all (the wrapper: ``mode="loss"`` dispatch, feature
capture hooks, the records, the teacher forward inside the distiller), masks + mask health but
no losses, masks + losses but no mask health. Each variant's overhead minus the previous
one's is the cost of the stage added. Prints medians of the per-round ratios to the baseline.
"""

from __future__ import annotations

import argparse

import torch
from distill_step import alternate, make_steps  # bench/ is this script's folder


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    import pgd.integration
    from pgd.testing import build_distiller, synthetic_batch

    MMLogger.get_instance("pgd_bench", log_level="WARNING")
    pgd.integration.init_scope()
    torch.manual_seed(0)
    dist = build_distiller("atss_tiny", "atss_tiny", 80)
    data = synthetic_batch(dist, 2, 160, 160, boxes_per_image=8, num_classes=80)
    opt = torch.optim.SGD([q for q in dist.parameters() if q.requires_grad], lr=1e-4)
    if dist.diagnostics is not None:
        dist.diagnostics.interval = 0  # the method's own cost, not the diagnostics'
    distill_step, baseline_step = make_steps(dist, data, opt)
    kd, full = dist.kd, dist.kd.forward

    def health(records, ds, masks):
        kd.mask_health.observe_pgd(masks, records.priors(), [s.gt_instances.bboxes for s in ds])

    def wrapper(records, ds):
        return {}

    def masks_health(records, ds):
        health(records, ds, kd.masks(records, ds))
        return {}

    def masks_losses(records, ds):
        return kd.losses(records, kd.masks(records, ds))

    def with_forward(fwd):
        def step():
            kd.forward = fwd
            try:
                distill_step()
            finally:
                kd.forward = full
        return step

    variants = [("full PGD step", distill_step), ("baseline", baseline_step),
                ("wrapper only (no KD terms)", with_forward(wrapper)),
                ("+ masks + mask health, no losses", with_forward(masks_health)),
                ("+ masks + losses, no mask health", with_forward(masks_losses))]
    med, ratios, _ = alternate([f for _, f in variants], args.repeat)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, atss_tiny -> atss_tiny, 160 px, "
          f"2 images, {args.repeat} rounds")
    print("| variant | median step (ms) | overhead vs baseline |\n|---|---:|---:|")
    for (name, _), m, r in zip(variants, med, ratios):
        print(f"| {name} | {1000 * m:.1f} | {100 * (r - 1):+.1f} % |")


if __name__ == "__main__":
    main()
