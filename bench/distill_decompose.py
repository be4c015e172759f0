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
    kd = dist.kd

    def without(obj, name, stub):
        """The distillation step with ``obj.name`` replaced by ``stub`` (PGD's own forward runs)."""
        def step():
            setattr(obj, name, stub)  # an instance attribute shadows the method
            try:
                distill_step()
            finally:
                delattr(obj, name)
        return step

    variants = [("full PGD step", distill_step), ("baseline", baseline_step),
                ("wrapper only (no KD terms)", without(kd, "forward", lambda records, ds: {})),
                ("+ masks + mask health, no losses", without(kd, "losses", lambda records, masks: {})),
                ("+ masks + losses, no mask health", without(kd.mask_health, "observe_pgd", lambda *a: None))]
    med, ratios, _ = alternate([f for _, f in variants], args.repeat)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, atss_tiny -> atss_tiny, 160 px, "
          f"2 images, {args.repeat} rounds")
    print("| variant | median step (ms) | overhead vs baseline |\n|---|---:|---:|")
    for (name, _), m, r in zip(variants, med, ratios):
        print(f"| {name} | {1000 * m:.1f} | {100 * (r - 1):+.1f} % |")


if __name__ == "__main__":
    main()
