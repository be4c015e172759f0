#!/usr/bin/env python
"""Before / after the issue-14 step cuts, in one process (docs/performance.md):

    python bench/distill_before_after.py [--rev 859f6eb] [--repeat 60] [--pair tiny|r101-r50]

Alternates, order rotated every round: the PGD distillation step of this tree ("after"), the
baseline (student step + teacher no-grad forward), and the same distillation step with the
code before ("before"): ``pgd/core`` of git revision ``--rev`` loaded as a separate package
(its batched masks and level-concatenated losses), the teacher's boxes decoded per level and
the mask health counted per image, as they were then. Checks first that both give the same
PGD losses. Prints medians of the step times and of the per-round ratios. Meant for revisions
from 859f6eb (issue 14's first batched path) on; run from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tempfile

import torch
from distill_step import alternate, make_steps  # bench/ is this script's folder

PAIRS = {"tiny": ("atss_tiny", "atss_tiny", 160), "r101-r50": ("atss_r50", "atss_r101", 640)}


def load_core(rev: str):
    """``pgd/core`` of ``rev`` as the package ``pgd_core_before`` (its relative imports stay inside)."""
    root = tempfile.mkdtemp()
    pkg = os.path.join(root, "pgd_core_before")
    os.makedirs(pkg)
    files = subprocess.check_output(["git", "ls-tree", "--name-only", rev, "pgd/core/"], text=True).split()
    for f in files:
        text = subprocess.check_output(["git", "show", f"{rev}:{f}"], text=True)
        with open(os.path.join(pkg, os.path.basename(f)), "w") as fh:
            fh.write(text)
    sys.path.insert(0, root)
    return importlib.import_module("pgd_core_before.pgd_method")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="859f6eb")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--pair", default="tiny", choices=list(PAIRS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    old = load_core(args.rev)

    from mmengine.logging import MMLogger

    import pgd.distill.methods.pgd as M
    import pgd.integration
    from pgd.testing import build_distiller, synthetic_batch

    MMLogger.get_instance("pgd_bench", log_level="WARNING")
    pgd.integration.init_scope()
    torch.manual_seed(0)
    s, t, size = PAIRS[args.pair]
    dist = build_distiller(s, t, 80)
    data = synthetic_batch(dist, 2, size, size, boxes_per_image=8, num_classes=80)
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=1e-4)
    if dist.diagnostics is not None:
        dist.diagnostics.interval = 0
    ad, mh = dist.t_adapter, dist.kd.mask_health

    def old_decode(bbox_preds, priors):  # per level, as before
        out = []
        for pred, anchors in zip(bbox_preds, priors.boxes_or_points):
            n = pred.shape[0]
            deltas = pred.permute(0, 2, 3, 1).reshape(n, -1, 4)
            boxes = ad.head.bbox_coder.decode(anchors.expand(n, -1, -1).reshape(-1, 4), deltas.reshape(-1, 4))
            out.append(boxes.reshape(n, -1, 4))
        return torch.cat(out, 1)

    def old_observe(masks, priors, gt_boxes):  # per image, as before
        mh.observe("cls", masks.fg_cls, priors.centres, gt_boxes)
        mh.observe("reg", masks.reg, priors.centres, gt_boxes)

    @contextlib.contextmanager
    def before():
        saved = (M.batch_pgd_masks, M.pgd_feature_losses)
        M.batch_pgd_masks, M.pgd_feature_losses = old.batch_pgd_masks, old.pgd_feature_losses
        ad.decode, mh.observe_pgd = old_decode, old_observe
        try:
            yield
        finally:
            M.batch_pgd_masks, M.pgd_feature_losses = saved
            del ad.decode, mh.observe_pgd

    distill_step, baseline_step = make_steps(dist, data, opt)

    def before_step():
        with before():
            distill_step()

    with torch.no_grad():  # the same PGD losses from both
        a = dist(**data, mode="loss")
        with before():
            b = dist(**data, mode="loss")
    for k in a:
        if k.startswith("loss_pgd_"):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-8)  # float32 sums of ~1e6 terms
    med, rat, times = alternate([distill_step, baseline_step, before_step], args.repeat)
    rab = statistics.median([x / y for x, y in zip(times[0], times[2])])
    print(f"{args.pair}: after {med[0]:.4f} s ({100 * (rat[0] - 1):+.1f} %), baseline {med[1]:.4f} s, "
          f"before {med[2]:.4f} s ({100 * (rat[2] - 1):+.1f} %), after/before {rab:.3f}")


if __name__ == "__main__":
    main()
