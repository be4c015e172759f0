#!/usr/bin/env python
"""Overhead of distillation itself: time of one PGD distillation training step divided by
(student training step + teacher no-grad forward), measured in the same process, alternating.

    python bench/distill_step.py                 # tiny pair at 160 px and r101 -> r50 at 640 px
    python bench/distill_step.py --pairs tiny --repeat 20 --threads 1
    python bench/distill_step.py --pairs tiny --repeat 20 --compare   # + the per-image path
    python bench/distill_step.py --pairs tiny --repeat 20 --diagnostics  # + a KD-diagnostics step

The ratio - 1 is what the distillation adds: masks (quality, PGW), attention and losses, the
hooks, plus the distiller's teacher input handling. ``--compare`` also times, alternating
in the same process, the reference path (per-image masks ``pgd_masks_per_image`` and
per-level losses, ``PGD.reference``), so both overheads come from one run.
``--diagnostics`` also times a step that measures the KD diagnostics (one backward per KD term
and one for the detection loss, ``pgd.distill.diagnostics``) and prints their cost amortised
over ``distill.diagnostics_interval`` steps (the default); the other variants run with the
diagnostics off, so the overhead column is the method's own.
Target (issue 14): <= 5 % on the tiny pair, <= 3 % for r101 -> r50.
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


def make_steps(dist, data, opt):
    """The two steps every comparison times: one distillation training step, and its baseline
    (the student's training step + the teacher's no-grad forward)."""

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

    return distill_step, baseline_step


def alternate(fns, repeat):
    """Times ``fns`` after one warm-up call each, ``repeat`` rounds, the order rotated every
    round (no variant always runs first). Returns the median times and the medians of the
    per-round ratios to ``fns[1]`` (the baseline; each round's variants ran back to back)."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for r in range(repeat):
        order = list(range(len(fns)))[r % len(fns):] + list(range(len(fns)))[: r % len(fns)]
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    med = [statistics.median(t) for t in times]
    ratios = [statistics.median([a / b for a, b in zip(t, times[1])]) for t in times]
    return med, ratios, times


def bench_pair(student_name, teacher_name, size, repeat, n_img, compare=False, diagnostics=False):
    from pgd.testing import build_distiller, synthetic_batch

    dist = build_distiller(student_name, teacher_name, 80)
    data = synthetic_batch(dist, n_img, size, size, boxes_per_image=8, num_classes=80)
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=1e-4)

    diag = dist.diagnostics  # measured only in diag_step (interval 1), off elsewhere
    if diag is not None:
        diag.interval = 0

    def diag_step():
        diag.interval = 1
        try:
            distill_step()
        finally:
            diag.interval = 0

    distill_step, baseline_step = make_steps(dist, data, opt)

    def reference_step():  # the per-image masks and per-level losses
        dist.kd.reference = True
        try:
            distill_step()
        finally:
            dist.kd.reference = False

    fns = [distill_step, baseline_step] + ([reference_step] if compare else [])
    if diagnostics:
        if diag is None:
            raise SystemExit("--diagnostics: this distiller has no KD diagnostics (distill.diagnostics_interval 0)")
        fns.append(diag_step)
    med, ratios, _ = alternate(fns, repeat)
    return med, ratios


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--compare", action="store_true", help="also time the per-image reference path")
    p.add_argument("--diagnostics", action="store_true",
                   help="also time a step measuring the KD diagnostics; print their amortised cost")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    import pgd.integration

    MMLogger.get_instance("pgd_bench", log_level="WARNING")  # no per-parameter init logs
    pgd.integration.init_scope()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, "
          f"{args.images} images per step, median of {args.repeat}")
    from pgd.config.defaults import KD_DIAGNOSTICS_INTERVAL

    ref_h = " | per-image path step (s) | per-image overhead" if args.compare else ""
    diag_h = (f" | diagnostics step (s) | diagnostics every {KD_DIAGNOSTICS_INTERVAL} steps"
              if args.diagnostics else "")
    print(f"| pair | input | distill step (s) | student step + teacher fwd (s) | overhead{ref_h}{diag_h} |")
    print("|---|---|---:|---:|---:|" + ("---:|---:|" if args.compare else "") + ("---:|---:|" if args.diagnostics else ""))
    for name in args.pairs:
        s, t, size = PAIRS[name]
        med, ratios = bench_pair(s, t, size, args.repeat, args.images, args.compare, args.diagnostics)
        row = f"| {t} -> {s} | {size} px | {med[0]:.3f} | {med[1]:.3f} | {100 * (ratios[0] - 1):+.1f} % |"
        if args.compare:
            row += f" {med[2]:.3f} | {100 * (ratios[2] - 1):+.1f} % |"
        if args.diagnostics:  # the extra time of a measured step, spread over the interval
            extra = (ratios[-1] - ratios[0]) / KD_DIAGNOSTICS_INTERVAL
            row += f" {med[-1]:.3f} | {100 * extra:+.1f} % |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
