"""Time the vectorised ``pgw_importance`` against a straightforward per-box loop.

1333x800 input (padded to 1344x800), FPN strides 8..128, one point per grid cell at the
cell centre ((i + 0.5) * stride), random GT boxes and random quality. Usage:

    .venv/bin/python bench/pgw.py [--repeat 5] [--boxes 1 10 100 500] [--k 30]

``pgw_importance_loop`` is also the reference the tests compare against.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

PINV_RTOL = 1e-9  # same relative eigenvalue threshold as pgd.core.pgw.PINV_RTOL


def pgw_importance_loop(quality, points, gt_boxes, k, topk_scope="inside"):
    """Reference PGW (spec section 3), one GT box at a time, with ``torch.linalg.pinv``."""
    q = quality.detach().float()
    p = points.detach().float()
    g = gt_boxes.detach().float()
    A, G = q.shape
    out = torch.zeros(A, device=q.device)
    for j in range(G):
        x1, y1, x2, y2 = g[j].tolist()
        inside = (p[:, 0] > x1) & (p[:, 0] < x2) & (p[:, 1] > y1) & (p[:, 1] < y2)
        if topk_scope == "inside":
            cand = torch.nonzero(inside).flatten()
        else:
            cand = torch.arange(A, device=q.device)
        if cand.numel() == 0:
            continue
        kk = min(k, cand.numel())
        sel = cand[torch.topk(q[cand, j], kk).indices]
        x = p[sel].double()
        d = x - x.mean(dim=0)
        sigma = d.T @ d / kk
        pinv = torch.linalg.pinv(sigma, rtol=PINV_RTOL, hermitian=True)
        w = torch.exp(-0.5 * ((d @ pinv) * d).sum(dim=1)).float()
        if topk_scope == "all":
            w = w * inside[sel].float()
        out[sel] = torch.maximum(out[sel], w)
    return out


def grid_points(width=1333, height=800, strides=(8, 16, 32, 64, 128), divisor=32):
    """Prior centres of every level (levels concatenated) and the level sizes."""
    pw = int(math.ceil(width / divisor) * divisor)
    ph = int(math.ceil(height / divisor) * divisor)
    pts, sizes = [], []
    for s in strides:
        h, w = int(math.ceil(ph / s)), int(math.ceil(pw / s))
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], dim=1))
        sizes.append(h * w)
    return torch.cat(pts).float(), sizes


def random_boxes(g, width=1333, height=800, gen=None):
    """``g`` random boxes inside the image, sides 8..600 px (clipped to the image)."""
    wh = torch.empty(g, 2).uniform_(8, 600, generator=gen)
    cx = torch.rand(g, generator=gen) * width
    cy = torch.rand(g, generator=gen) * height
    x1 = (cx - wh[:, 0] / 2).clamp(0, width - 1)
    y1 = (cy - wh[:, 1] / 2).clamp(0, height - 1)
    x2 = (cx + wh[:, 0] / 2).clamp(1, width)
    y2 = (cy + wh[:, 1] / 2).clamp(1, height)
    return torch.stack([x1, y1, x2, y2], dim=1)


def _time_pair(fn_a, fn_b, repeat):
    """Best-of-``repeat`` wall time of two functions, measured alternately (fair under load)."""
    fn_a()  # warm-up
    fn_b()
    best_a = best_b = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        best_a = min(best_a, t1 - t0)
        best_b = min(best_b, t2 - t1)
    return best_a, best_b


def main(argv=None):
    from pgd.core import pgw_importance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per case (best is kept)")
    ap.add_argument("--boxes", type=int, nargs="+", default=[1, 10, 100, 500])
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--scope", default="inside", choices=["inside", "all"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    points, sizes = grid_points()
    A = points.shape[0]
    print(f"A = {A} positions (levels {sizes}), k = {args.k}, scope = {args.scope}, "
          f"threads = {torch.get_num_threads()}, best of {args.repeat}")
    print(f"| {'boxes':>5} | {'vectorised ms':>13} | {'loop ms':>9} | {'ratio':>6} | {'max |diff|':>10} |")
    print(f"|{'-' * 7}|{'-' * 15}|{'-' * 11}|{'-' * 8}|{'-' * 12}|")
    for g in args.boxes:
        boxes = random_boxes(g, gen=gen)
        quality = torch.rand(A, g, generator=gen)
        t_vec, t_loop = _time_pair(
            lambda: pgw_importance(quality, points, boxes, args.k, args.scope),  # noqa: B023
            lambda: pgw_importance_loop(quality, points, boxes, args.k, args.scope),  # noqa: B023
            args.repeat,
        )
        diff = (pgw_importance(quality, points, boxes, args.k, args.scope)
                - pgw_importance_loop(quality, points, boxes, args.k, args.scope)).abs().max()
        print(f"| {g:>5} | {t_vec * 1e3:>13.2f} | {t_loop * 1e3:>9.2f} | {t_loop / t_vec:>5.1f}x | {diff.item():>10.2e} |")


if __name__ == "__main__":
    main()
