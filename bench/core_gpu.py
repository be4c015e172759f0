#!/usr/bin/env python
"""PGD's own cost on a GPU (or the CPU), needing only torch and ``pgd.core`` (no mmdet /
mmcv / mmengine: it runs on a machine whose Python has torch but not our stack).

    python bench/core_gpu.py                  # 1333x800, 1/10/100/500 GT boxes, cuda if present
    python bench/core_gpu.py --tiny           # seconds on CPU (the default tests run this)

Per number of GT boxes per image (2 images, 80 classes, ATSS: one anchor per location,
K = 9, xi 0.8 / 0.6, tau 0.8), with synthetic teacher predictions and synthetic FPN maps of
the real shapes (ATSS R50 FPN: 256 channels, strides 8..128, input padded to 1344x800):

- ``masks``: :func:`pgd.core.masks.batch_masks` (both branches, the whole batch);
- ``loop``: the same masks with the PGW step done one box at a time
  (``pgw_importance_loop`` of ``bench/pgw.py``, what a straightforward port does);
- ``losses``: :func:`pgd.core.losses.pgd_cls_loss_levels` + ``pgd_reg_loss_levels``
  forward and backward;
- ``head``: an ATSS-like dense head (4 conv3x3-GN-ReLU per tower, cls / reg / centerness
  convs, shared over levels) forward and backward on the same maps: what the detector
  spends anyway, for scale.

Prints a Markdown table (median ms) and checks that the loop and the batched masks agree,
and, with CUDA, that the GPU masks and losses equal the CPU ones within tolerance.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgw import pgw_importance_loop, random_boxes  # noqa: E402  (bench/pgw.py)

from pgd.config.defaults import XI_CLS, XI_REG  # noqa: E402
from pgd.core import level_normalize  # noqa: E402
from pgd.core.losses import pgd_cls_loss_levels, pgd_reg_loss_levels  # noqa: E402
from pgd.core.masks import batch_masks, pad_gt  # noqa: E402

STRIDES = (8, 16, 32, 64, 128)
K, TAU, ALPHA, DELTA = 9, 0.8, 0.08, 8e-4
FULL = dict(width=1333, height=800, channels=256, classes=80, boxes=(1, 10, 100, 500), images=2)
TINY = dict(width=160, height=128, channels=8, classes=6, boxes=(0, 1, 7), images=2)


def level_shapes(width, height, divisor=32):
    pw, ph = math.ceil(width / divisor) * divisor, math.ceil(height / divisor) * divisor
    return [(math.ceil(ph / s), math.ceil(pw / s)) for s in STRIDES]


def make_inputs(cfg, n_boxes, seed=0):
    """Synthetic teacher predictions, GT boxes and student/teacher maps (CPU tensors)."""
    g = torch.Generator().manual_seed(seed)
    shapes = level_shapes(cfg["width"], cfg["height"])
    pts = []
    for (h, w), s in zip(shapes, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1).float())
    points = torch.cat(pts)
    A, N = points.shape[0], cfg["images"]
    probs = torch.rand(N, A, cfg["classes"], generator=g)
    stride = torch.cat([torch.full((h * w, 1), float(s)) for (h, w), s in zip(shapes, STRIDES)])
    wh = stride * (2 + 6 * torch.rand(N, A, 2, generator=g))
    boxes = torch.cat([points - wh / 2, points + wh / 2], -1)
    gts = [random_boxes(n_boxes, cfg["width"], cfg["height"], gen=g) for _ in range(N)]
    labels = [torch.randint(0, cfg["classes"], (n_boxes,), generator=g) for _ in range(N)]
    C = cfg["channels"]
    fs = [torch.randn(N, C, h, w, generator=g) for h, w in shapes]
    ft = [torch.randn(N, C, h, w, generator=g) for h, w in shapes]
    return dict(points=points, sizes=[h * w for h, w in shapes], probs=probs, boxes=boxes,
                gts=gts, labels=labels, fs=fs, ft=ft)


def to(inp, device):
    return {k: (v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v]
                if isinstance(v, list) and v and torch.is_tensor(v[0]) else v)
            for k, v in inp.items()}


def masks(inp):
    gb, gl, gv = pad_gt(inp["gts"], inp["labels"], inp["points"].device)
    return batch_masks(inp["probs"], inp["boxes"], inp["points"], inp["sizes"], 1, gb, gl, gv,
                       strategy="pgw", xi_cls=XI_CLS, xi_reg=XI_REG, k_cls=K, k_reg=K)


def masks_loop(inp):
    """The same fg_cls / reg with PGW one box at a time (quality shared with the batched path)."""
    from pgd.core import box_iou_pairs, quality_score

    fg, reg = [], []
    for n, (gt, lab) in enumerate(zip(inp["gts"], inp["labels"])):
        p = inp["probs"][n][:, lab]
        iou = box_iou_pairs(inp["boxes"][n], gt)
        out = []
        for xi in (XI_CLS, XI_REG):
            out.append(pgw_importance_loop(quality_score(p, iou, xi), inp["points"], gt, K))
        fg.append(level_normalize(out[0], inp["sizes"]))
        reg.append(out[1])
    return dict(fg_cls=torch.stack(fg), reg=torch.stack(reg))


def losses(inp, m, backward=True):
    fs = [f.detach().requires_grad_() for f in inp["fs"]]
    cls = pgd_cls_loss_levels(fs, inp["ft"], m["fg_cls"], m["bg"], ALPHA, ALPHA / 2, DELTA, TAU,
                              [1.0, 1.25, 1.5, 1.75, 2.0])
    reg = pgd_reg_loss_levels(fs, inp["ft"], m["reg"], 1.6 * ALPHA, DELTA, TAU)
    total = cls["fea"] + cls["att"] + reg["fea"] + reg["att"]
    grads = torch.autograd.grad(total, fs) if backward else None
    return total.detach(), grads


class Head(torch.nn.Module):
    """ATSS-like dense head: 4 x (conv3x3, GroupNorm(32), ReLU) per tower, shared over levels."""

    def __init__(self, c, classes):
        super().__init__()

        def tower():
            layers = []
            for _ in range(4):
                layers += [torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.GroupNorm(min(32, c), c), torch.nn.ReLU()]
            return torch.nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls = torch.nn.Conv2d(c, classes, 3, padding=1)
        self.reg = torch.nn.Conv2d(c, 4, 3, padding=1)
        self.ctr = torch.nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, feats):
        out = 0.0
        for f in feats:
            r = self.reg_tower(f)
            out = out + self.cls(self.cls_tower(f)).mean() + self.reg(r).mean() + self.ctr(r).mean()
        return out


def timed(fn, device, repeat):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def check_close(name, a, b, atol, rtol=1e-4):
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    ok = torch.allclose(a, b, atol=atol, rtol=rtol)
    if not ok:
        raise AssertionError(f"{name}: max |diff| {diff:.3e} over tolerance atol={atol}, rtol={rtol}")
    return diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small CPU run (seconds), for the tests")
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    ap.add_argument("--boxes", type=int, nargs="+", default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--no-loop", action="store_true", help="skip the per-box loop (slow at 500 boxes)")
    args = ap.parse_args(argv)
    cfg = dict(TINY if args.tiny else FULL)
    if args.boxes:
        cfg["boxes"] = tuple(args.boxes)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    repeat = args.repeat or (1 if args.tiny else 10)
    shapes = level_shapes(cfg["width"], cfg["height"])
    head = Head(cfg["channels"], cfg["classes"]).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}; {cfg['width']}x{cfg['height']} input, levels {shapes}, "
          f"{cfg['channels']} channels, {cfg['images']} images, K={K}, median of {repeat} (ms)\n")
    print("| GT boxes / image | masks (batched) | masks (per-box loop) | loop / batched | losses fwd+bwd "
          "| PGD total | dense head fwd+bwd | PGD / head | max diff loop | max diff GPU-CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for nb in cfg["boxes"]:
        cpu_inp = make_inputs(cfg, nb)
        inp = to(cpu_inp, device)
        m = masks(inp)
        t_m = timed(lambda: masks(inp), device, repeat)  # noqa: B023
        t_l = timed(lambda: losses(inp, m), device, repeat)  # noqa: B023
        feats = [f.detach().requires_grad_() for f in inp["fs"]]
        t_h = timed(lambda: head(feats).backward(), device, max(1, repeat // 2))  # noqa: B023
        d_loop = float("nan")
        t_loop = float("nan")
        if not args.no_loop:
            ml = masks_loop(inp)
            t_loop = timed(lambda: masks_loop(inp), device, max(1, repeat // 2))  # noqa: B023
            d_loop = max(check_close(f"loop {k} ({nb} boxes)", m[k], ml[k], atol=1e-5) for k in ml)
        d_dev = float("nan")
        if device.type == "cuda":
            mc = masks(cpu_inp)
            d_dev = max(check_close(f"GPU vs CPU {k} ({nb} boxes)", m[k], mc[k], atol=1e-5) for k in mc)
            lg, gg = losses(inp, m)
            lc, gc = losses(cpu_inp, mc)
            d_dev = max(d_dev, check_close("GPU vs CPU loss", lg, lc, atol=1e-6, rtol=1e-4))
            d_dev = max(d_dev, max(check_close("GPU vs CPU grad", a, b, atol=1e-7, rtol=1e-3) for a, b in zip(gg, gc)))
        pgd = t_m + t_l
        rows.append(dict(boxes=nb, masks=t_m, loop=t_loop, losses=t_l, head=t_h, diff_loop=d_loop, diff_dev=d_dev))
        print(f"| {nb} | {t_m:.2f} | {t_loop:.2f} | {t_loop / t_m:.1f}x | {t_l:.2f} | {pgd:.2f} | {t_h:.2f} | "
              f"{100 * pgd / t_h:.1f} % | {d_loop:.1e} | {d_dev:.1e} |", flush=True)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("mmdet", "mmcv", "mmengine"))
    assert not heavy, f"bench/core_gpu.py must need only torch + pgd.core, but imported {heavy[:5]}"
    return rows


if __name__ == "__main__":
    main()
