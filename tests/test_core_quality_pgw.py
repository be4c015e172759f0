"""Quality score, IoU, anchor reduction, PGW importance, masks and level normalisation."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgd.core import (
    PINV_RTOL,
    background_mask,
    box_iou_pairs,
    inside_mask,
    level_normalize,
    max_over_anchors,
    pgw_importance,
    quality_score,
)
from pgd.core.pgw import _inside_ag, _inside_ga, _inside_scores, _pinv_quadratic, _topk_columns
from pgd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("_bench_pgw", ROOT / "bench" / "pgw.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BENCH = _load_bench()
BIG_BOX = torch.tensor([[-100.0, -100.0, 100.0, 100.0]])


def _select(points, chosen, big=None):
    """Quality [A, 1] that ranks ``chosen`` (indices) first, in the given order."""
    A = points.shape[0]
    q = torch.full((A, 1), 0.01)
    for r, i in enumerate(chosen):
        q[i, 0] = 0.9 - 0.01 * r
    return q


# ----------------------------------------------------------------------------- quality
def test_quality_score_hand_values():
    p = torch.tensor([[0.25, 1.0], [0.0, 0.64]])
    iou = torch.tensor([[0.5, 0.81], [0.7, 1.0]])
    q = quality_score(p, iou, 0.5)
    exp = torch.tensor([[0.5 * math.sqrt(0.5), 0.9], [0.0, 0.8]])
    torch.testing.assert_close(q, exp)
    q8 = quality_score(p, iou, 0.8)
    assert q8[0, 0].item() == pytest.approx(0.25**0.2 * 0.5**0.8, rel=1e-6)
    torch.testing.assert_close(quality_score(p, iou, 0.0), p)
    torch.testing.assert_close(quality_score(p, iou, 1.0), iou)


def test_quality_score_no_grad_dtype_and_clamp():
    p = torch.rand(5, 3, requires_grad=True)
    q = quality_score(p, torch.rand(5, 3), 0.8)
    assert not q.requires_grad
    q16 = quality_score(p.detach().half(), torch.rand(5, 3).half(), 0.6)
    assert q16.dtype == torch.float16 and torch.isfinite(q16).all()
    # a tiny negative IoU from rounding must not give NaN
    q_neg = quality_score(torch.tensor([0.5]), torch.tensor([-1e-7]), 0.6)
    assert q_neg.item() == 0.0


@pytest.mark.parametrize("xi", [-0.1, 1.5, float("nan"), "a"])
def test_quality_score_bad_xi(xi):
    with pytest.raises(ConfigError, match="xi"):
        quality_score(torch.rand(2, 2), torch.rand(2, 2), xi)


def test_quality_score_shape_mismatch():
    with pytest.raises(ConfigError, match=r"\(2, 3\).*\(3, 2\)"):
        quality_score(torch.rand(2, 3), torch.rand(3, 2), 0.5)


# ----------------------------------------------------------------------------- IoU
def test_box_iou_pairs_hand_values_and_degenerate():
    boxes = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 5, 9], [0, 0, 2, 2]])
    gt = torch.tensor([[1.0, 1, 3, 3], [5, 5, 5, 9], [10, 10, 12, 12], [0, 0, 4, 2]])
    iou = box_iou_pairs(boxes, gt)
    assert iou.shape == (4, 4)
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert iou[1, 0].item() == pytest.approx(1.0)
    assert iou[0, 3].item() == pytest.approx(0.5)
    assert iou[2, 1].item() == 0.0  # zero-area box with itself: 0, not NaN
    assert iou[0, 2].item() == 0.0
    assert torch.isfinite(iou).all()
    h = box_iou_pairs(boxes.half() * 300, gt.half() * 300)  # areas overflow fp16
    assert h.dtype == torch.float16 and torch.isfinite(h).all()
    assert h[0, 0].item() == pytest.approx(1 / 7, rel=1e-3)


def test_box_iou_pairs_bad_shape():
    with pytest.raises(ConfigError, match="boxes"):
        box_iou_pairs(torch.rand(3, 5), torch.rand(2, 4))


# ----------------------------------------------------------------------------- anchors
def test_max_over_anchors_anchor_innermost():
    # 2 locations x 3 anchors, anchor index innermost (mmdet's (h, w, anchor) order)
    q = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.1], [0.7, 0.0], [0.2, 0.4], [0.6, 0.8]])
    out = max_over_anchors(q, 3)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.9], [0.7, 0.8]]))
    assert max_over_anchors(q, 1) is q


@pytest.mark.parametrize("na", [4, 0, 1.5])
def test_max_over_anchors_errors(na):
    with pytest.raises(ConfigError, match="num_anchors"):
        max_over_anchors(torch.rand(6, 2), na)


# ----------------------------------------------------------------------------- masks
def test_inside_is_strict_and_background_mask():
    pts = torch.tensor([[5.0, 5], [0, 5], [10, 5], [5, 10], [15, 5], [9.99, 0.01]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    assert inside_mask(pts, gt)[:, 0].tolist() == [True, False, False, False, False, True]
    assert background_mask(pts, gt).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert background_mask(pts, gt.half()).dtype == torch.float32
    assert background_mask(pts.half(), gt).dtype == torch.float16
    # G = 0: everything is background
    bg0 = background_mask(pts, torch.zeros(0, 4))
    assert bg0.tolist() == [1.0] * 6


def test_inside_factorised_equals_direct():
    g = torch.Generator().manual_seed(1)
    pts, _ = BENCH.grid_points(320, 256)
    pts = torch.cat([pts, torch.rand(50, 2, generator=g) * 300])
    gt = BENCH.random_boxes(40, 320, 256, gen=g)
    gt[0] = torch.tensor([4.0, 4.0, 12.0, 20.0])  # edges exactly on P3 centres
    a = _inside_ag(pts, gt, factorise=False)
    assert torch.equal(a, _inside_ag(pts, gt, factorise=True))
    assert torch.equal(a, _inside_ga(pts, gt).t())
    assert a.any() and not a.all()
    # integer coordinates: many points on box edges, shared edges, empty boxes
    for trial in range(40):
        A = int(torch.randint(1, 200, (1,), generator=g))
        G = int(torch.randint(1, 20, (1,), generator=g))
        pts = torch.randint(0, 12, (A, 2), generator=g).float()
        gt = torch.randint(0, 12, (G, 4), generator=g).float()
        if trial % 2:
            gt[:, 2:] = gt[:, :2] + torch.randint(0, 5, (G, 2), generator=g).float()
        direct = _inside_ag(pts, gt, factorise=False)
        assert torch.equal(direct, _inside_ag(pts, gt, factorise=True)), trial
        q = torch.rand(A, G, generator=g)
        assert torch.equal(_inside_scores(q, pts, gt, factorise=True),
                           torch.where(direct, q, float("-inf")))


def test_topk_columns_two_stage_matches_torch_topk():
    g = torch.Generator().manual_seed(2)
    for A, G, k in ((1706, 7, 9), (4096, 3, 20), (1000, 5, 1)):
        s = torch.rand(A, G, generator=g)
        s[torch.rand(A, G, generator=g) > 0.1] = float("-inf")  # sparse candidates
        s[:, 0] = float("-inf")  # a box with no candidate
        s[5, 1] = 2.0  # one huge value in the first block
        vals, idx = _topk_columns(s, k, two_stage=True)
        ref = torch.topk(s, k, dim=0).values.t()
        assert torch.equal(_topk_columns(s, k, two_stage=False)[0].sort(dim=1).values,
                           ref.sort(dim=1).values)
        assert torch.equal(vals.sort(dim=1).values, ref.sort(dim=1).values)
        assert torch.equal(torch.gather(s.t(), 1, idx), vals)  # indices point at the values
        assert idx.min() >= 0 and idx.max() < A


def test_level_normalize_hand_values():
    w = torch.tensor([0.5, 0.0, 1.0, 0.0, 0.0, 0.2, 0.4])
    out = level_normalize(w, [3, 2, 2])
    torch.testing.assert_close(out, torch.tensor([0.25, 0.0, 0.5, 0.0, 0.0, 0.1, 0.2]))
    assert out[3:5].tolist() == [0.0, 0.0]  # a level with no foreground stays 0
    bg = torch.tensor([[1.0, 1, 0, 1, 1], [0, 0, 0, 1, 0]])
    out_b = level_normalize(bg, [3, 2])
    torch.testing.assert_close(out_b, torch.tensor([[0.5, 0.5, 0, 0.5, 0.5], [0, 0, 0, 1, 0]]))
    assert level_normalize(w.half(), [3, 2, 2]).dtype == torch.float16


@pytest.mark.parametrize("sizes", [[3, 3], [8], [3, -1, 5], "abc"])
def test_level_normalize_errors(sizes):
    with pytest.raises(ConfigError, match="level_sizes"):
        level_normalize(torch.rand(7), sizes)


# ----------------------------------------------------------------------------- PGW
def test_pgw_five_points_hand_computed():
    # corners of a 4x2 rectangle plus its centre: mu = (2, 1), Sigma = diag(16/5, 4/5)
    pts = torch.tensor([[0.0, 0], [4, 0], [0, 2], [4, 2], [2, 1], [1, 1], [3, 0.5]])
    q = _select(pts, [0, 1, 2, 3, 4])
    imp = pgw_importance(q, pts, BIG_BOX, k=5)
    corner = math.exp(-0.5 * (4 / (16 / 5) + 1 / (4 / 5)))  # d^T S^-1 d = 2.5
    exp = torch.tensor([corner] * 4 + [1.0, 0.0, 0.0])
    torch.testing.assert_close(imp, exp, rtol=1e-5, atol=1e-6)


def test_pgw_correlated_three_points_hand_computed():
    pts = torch.tensor([[10.0, 10], [14, 10], [10, 16], [30, 30]])
    q = _select(pts, [0, 1, 2])
    imp = pgw_importance(q, pts, BIG_BOX, k=3)
    # mu = (34/3, 12); Sigma = [[32/9, -8/3], [-8/3, 8]] -> every vertex has d^T S^-1 d = 2
    a, b, c = 32 / 9, -8 / 3, 8.0
    det = a * c - b * b
    inv = [[c / det, -b / det], [-b / det, a / det]]
    mu = (34 / 3, 12.0)
    exp = []
    for x, y in pts[:3].tolist():
        dx, dy = x - mu[0], y - mu[1]
        m = dx * dx * inv[0][0] + 2 * dx * dy * inv[0][1] + dy * dy * inv[1][1]
        exp.append(math.exp(-0.5 * m))
    assert exp[0] == pytest.approx(math.exp(-1.0))  # the hand derivation above
    torch.testing.assert_close(imp, torch.tensor(exp + [0.0]), rtol=1e-5, atol=1e-6)


def test_pgw_k1_single_candidate_and_identical_points():
    pts = torch.tensor([[1.0, 1], [2, 2], [3, 3], [50, 50]])
    q = torch.tensor([[0.2], [0.9], [0.5], [0.99]])
    imp = pgw_importance(q, pts, torch.tensor([[0.0, 0, 10, 10]]), k=1)
    assert imp.tolist() == [0.0, 1.0, 0.0, 0.0]  # (50, 50) is outside the box
    # a box with a single candidate gets importance 1 whatever k is
    imp1 = pgw_importance(q, pts, torch.tensor([[2.5, 2.5, 3.5, 3.5]]), k=30)
    assert imp1.tolist() == [0.0, 0.0, 1.0, 0.0]
    # a box with no candidate contributes nothing
    imp0 = pgw_importance(q, pts, torch.tensor([[20.0, 20, 30, 30]]), k=30)
    assert imp0.tolist() == [0.0] * 4


def test_pgw_collinear_points_use_distance_along_line():
    pts = torch.tensor([[0.0, 0], [2, 2], [4, 4], [9, 1]])
    q = _select(pts, [0, 1, 2])
    imp = pgw_importance(q, pts, BIG_BOX, k=3)
    # along the line t = -2*sqrt2, 0, 2*sqrt2; variance 16/3; ends have m = 8 / (16/3) = 1.5
    exp = torch.tensor([math.exp(-0.75), 1.0, math.exp(-0.75), 0.0])
    torch.testing.assert_close(imp, exp, rtol=1e-5, atol=1e-6)
    # a less trivial line (slope 1/3, uneven spacing)
    pts2 = torch.tensor([[3.0, 1], [9, 3], [12, 4], [30, 10]])
    imp2 = pgw_importance(_select(pts2, [0, 1, 2, 3]), pts2, BIG_BOX, k=4)
    t = torch.tensor([0.0, 6, 9, 27]) * math.sqrt(10) / 3  # positions along the line
    d = t - t.mean()
    torch.testing.assert_close(imp2, torch.exp(-0.5 * d**2 / (d**2).mean()), rtol=1e-5, atol=1e-6)


def test_pgw_overlapping_boxes_take_max():
    pts = torch.tensor([[1.0, 1], [3, 1], [5, 1], [5, 3], [7, 3], [7, 5]])
    boxes = torch.tensor([[0.0, 0, 6, 4], [4.0, 0, 8, 6]])
    g = torch.Generator().manual_seed(0)
    q = torch.rand(6, 2, generator=g)
    both = pgw_importance(q, pts, boxes, k=3)
    one = pgw_importance(q[:, :1], pts, boxes[:1], k=3)
    two = pgw_importance(q[:, 1:], pts, boxes[1:], k=3)
    assert torch.equal(both, torch.maximum(one, two))
    assert ((one > 0) & (two > 0)).any()  # the boxes really compete for a position
    assert not torch.equal(one, two)


def test_pgw_spec_identities_random():
    g = torch.Generator().manual_seed(3)
    for K in (3, 7, 30):
        pts = torch.rand(200, 2, generator=g) * 500
        q = torch.rand(200, 1, generator=g)
        imp = pgw_importance(q, pts, torch.tensor([[-1.0, -1, 501, 501]]), k=K).double()
        sel = imp > 0
        assert int(sel.sum()) == K
        m = -2.0 * torch.log(imp[sel])
        assert m.sum().item() == pytest.approx(2 * K, rel=1e-4)  # sum of d^T S^-1 d = 2K
    # a selected position at mu gets importance exactly 1
    pts = torch.tensor([[0.0, 0], [6, 0], [0, 6], [6, 6], [3, 3], [1, 5]])
    imp = pgw_importance(_select(pts, [0, 1, 2, 3, 4]), pts, BIG_BOX, k=5)
    assert imp[4].item() == 1.0


def test_pinv_quadratic_matches_torch_pinv():
    g = torch.Generator().manual_seed(5)
    covs = []
    for _ in range(20):
        m = torch.randn(2, 2, generator=g, dtype=torch.float64) * 30
        covs.append(m @ m.T)
    for _ in range(10):  # rank 1
        v = torch.randn(2, 1, generator=g, dtype=torch.float64) * 30
        covs.append(v @ v.T)
    covs.append(torch.zeros(2, 2, dtype=torch.float64))
    covs.append(torch.diag(torch.tensor([5.0, 0.0], dtype=torch.float64)))
    covs.append(torch.diag(torch.tensor([0.0, 5.0], dtype=torch.float64)))
    S = torch.stack(covs)
    d = torch.randn(S.shape[0], 4, 2, generator=g, dtype=torch.float64) * 20
    ours = _pinv_quadratic(d, S[:, 0, 0], S[:, 0, 1], S[:, 1, 1], PINV_RTOL)
    pinv = torch.linalg.pinv(S, rtol=PINV_RTOL, hermitian=True)
    ref = torch.einsum("gki,gij,gkj->gk", d, pinv, d)
    torch.testing.assert_close(torch.exp(-0.5 * ours), torch.exp(-0.5 * ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("scope", ["inside", "all"])
def test_pgw_matches_loop_reference(scope):
    gen = torch.Generator().manual_seed(11)
    pts, _ = BENCH.grid_points(320, 256)
    A = pts.shape[0]
    for G, k in ((1, 9), (5, 30), (40, 9), (40, 200)):  # G = 40 takes the factorised path
        boxes = BENCH.random_boxes(G, 320, 256, gen=gen)
        q = torch.rand(A, G, generator=gen)
        ours = pgw_importance(q, pts, boxes, k, scope)
        ref = BENCH.pgw_importance_loop(q, pts, boxes, k, scope)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        assert (ours > 0).any()


def test_topk_scope_inside_vs_all_differ():
    pts = torch.tensor([[5.0, 5], [15, 5], [25, 5]])
    box = torch.tensor([[0.0, 0, 10, 10]])
    q = torch.tensor([[0.1], [0.9], [0.8]])
    assert pgw_importance(q, pts, box, 1, "inside").tolist() == [1.0, 0.0, 0.0]
    assert pgw_importance(q, pts, box, 1, "all").tolist() == [0.0, 0.0, 0.0]
    assert pgw_importance(q, pts, box, 3, "inside").tolist() == [1.0, 0.0, 0.0]
    # 'all' fits the Gaussian to all three (mu = (15, 5), var_x = 200/3), then keeps inside
    exp = torch.tensor([math.exp(-0.5 * 100 / (200 / 3)), 0.0, 0.0])
    torch.testing.assert_close(pgw_importance(q, pts, box, 3, "all"), exp)
    # K is clipped to the number of candidates: every position for 'all'
    torch.testing.assert_close(pgw_importance(q, pts, box, 30, "all"), exp)


def test_pgw_empty_gt_dtype_fp16_and_no_grad():
    pts, _ = BENCH.grid_points(128, 96)
    A = pts.shape[0]
    assert pgw_importance(torch.zeros(A, 0), pts, torch.zeros(0, 4), 9).tolist() == [0.0] * A
    gen = torch.Generator().manual_seed(2)
    boxes = BENCH.random_boxes(6, 128, 96, gen=gen)
    q = torch.rand(A, 6, generator=gen, requires_grad=True)
    imp = pgw_importance(q, pts, boxes, 9)
    assert not imp.requires_grad
    imp16 = pgw_importance(q.detach().half(), pts.half(), boxes.half(), 9)
    assert imp16.dtype == torch.float16 and torch.isfinite(imp16).all()
    assert (imp16 > 0).sum() > 0
    torch.testing.assert_close(imp16.float(), pgw_importance(q.detach().half().float(), pts, boxes, 9),
                               atol=2e-3, rtol=2e-3)
    assert torch.equal(imp, pgw_importance(q, pts, boxes, 9))  # deterministic


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k"),
        (dict(k=2.5), "k"),
        (dict(k=True), "k"),
        (dict(topk_scope="box"), "'box'.*all, inside"),
        (dict(quality=torch.rand(5, 2)), r"quality.*\(5, 2\)"),
        (dict(points=torch.rand(6, 3)), "points"),
        (dict(gt_boxes=torch.rand(2, 5)), "gt_boxes"),
    ],
)
def test_pgw_errors(kwargs, match):
    args = dict(quality=torch.rand(6, 2), points=torch.rand(6, 2), gt_boxes=torch.rand(2, 4),
                k=3, topk_scope="inside")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        pgw_importance(**args)


def test_core_imports_no_mm_packages():
    code = (
        "import sys, pgd.core; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmcv', 'mmengine')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in (ROOT / "pgd" / "core").glob("*.py"):
        text = f.read_text()
        for mod in ("mmdet", "mmcv", "mmengine"):
            assert f"import {mod}" not in text and f"from {mod}" not in text, f
