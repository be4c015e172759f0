#!/usr/bin/env python
"""Overhead of distillation itself: time of one PGD distillation training step divided by
(student training step + teacher no-grad forward), measured in the same process, alternating.

    python bench/distill_step.py                 # tiny pair at 160 px and r101 -> r50 at 640 px
    python bench/distill_step.py --pairs tiny --repeat 20

The ratio - 1 is what the distillation adds: masks (quality, PGW), attention and losses, the
hooks, plus the distiller's teacher input handling. Target: <= 10 % on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pgd.testing import total_loss

PAIRS = {
    "tiny": ("atss_tiny", "atss_tiny", 160),
    "r101-r50": ("atss_r50", "atss_r101", 640),
}


def bench_pair(student_name, teacher_name, size, repeat, n_img):
    from pgd.testing import build_distiller, synthetic_batch

    dist = build_distiller(student_name, teacher_name, 80)
    data = synthetic_batch(dist, n_img, size, size, boxes_per_image=8, num_classes=80)
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=1e-4)

    def distill_step():
        opt.zero_grad()
        total_loss(dist(**data, mode="loss")).backward()
        opt.step()

    def baseline_step():
        opt.zero_grad()
        total_loss(dist.student.loss(data["inputs"], data["data_samples"])).backward()
        opt.step()
        with torch.no_grad():
            dist.teacher.bbox_head(dist.teacher.extract_feat(data["inputs"]))

    for f in (distill_step, baseline_step):  # warm-up
        f()
    t_d, t_b = [], []
    for _ in range(repeat):
        for f, acc in ((distill_step, t_d), (baseline_step, t_b)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    md, mb = statistics.median(t_d), statistics.median(t_b)
    return md, mb


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--images", type=int, default=2)
    args = p.parse_args()
    from mmengine.logging import MMLogger

    import pgd.integration

    MMLogger.get_instance("pgd_bench", log_level="WARNING")  # no per-parameter init logs
    pgd.integration.init_scope()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, "
          f"{args.images} images per step, median of {args.repeat}")
    print("| pair | input | distill step (s) | student step + teacher fwd (s) | ratio | overhead |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.pairs:
        s, t, size = PAIRS[name]
        md, mb = bench_pair(s, t, size, args.repeat, args.images)
        print(f"| {t} -> {s} | {size} px | {md:.3f} | {mb:.3f} | {md / mb:.3f} | {100 * (md / mb - 1):+.1f} % |",
              flush=True)


if __name__ == "__main__":
    main()
