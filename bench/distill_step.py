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

PAIRS = {
    "tiny": ("atss_tiny", "atss_tiny", 160),
    "r101-r50": ("atss_r50", "atss_r101", 640),
}


def batch(model, n, size):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = []
    for _ in range(n):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)))
        k = 8
        xy = torch.rand(k, 2, generator=g) * size * 0.7
        wh = 8 + torch.rand(k, 2, generator=g) * size * 0.3
        s.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1), labels=torch.randint(0, 80, (k,), generator=g))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)


def total(losses):
    return sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)


def bench_pair(student_name, teacher_name, size, repeat, n_img):
    from mmdet.registry import MODELS

    from pgd.detectors import model_config
    from pgd.distill.config import distill_config, resolve_defaults

    det = student_name.rsplit("_", 1)[0]
    s_cfg, t_cfg = model_config(student_name, 80), model_config(teacher_name, 80)
    d = resolve_defaults(distill_config(dict(teacher=teacher_name, allow_random_teacher=True)), det)
    dist = MODELS.build(dict(type="PGDDistiller", detector=det, student=s_cfg, teacher=t_cfg, distill=d,
                             data_preprocessor=s_cfg["data_preprocessor"]))
    dist.init_weights()
    dist.train()
    data = batch(dist, n_img, size)
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=1e-4)

    def distill_step():
        opt.zero_grad()
        total(dist(**data, mode="loss")).backward()
        opt.step()

    def baseline_step():
        opt.zero_grad()
        total(dist.student.loss(data["inputs"], data["data_samples"])).backward()
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
