"""The seven foreground strategies of paper Table 5 (spec section 6)."""

from __future__ import annotations

import math

import pytest
import torch

from pgd.core import (
    BOX_GAUSS_SIGMA,
    CENTRE_RATIO,
    STRATEGIES,
    foreground_weights,
    pgw_importance,
)
from pgd.errors import ConfigError


def _grid(step=2.0, size=40.0):
    v = torch.arange(step / 2, size, step)
    ys, xs = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


PTS = _grid()  # 20 x 20 points at 1, 3, ..., 39
BOXES = torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.0, 10.0, 40.0, 20.0]])


def _q(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(PTS.shape[0], BOXES.shape[0], generator=g)


def _inside(points, box):
    x, y = points[:, 0], points[:, 1]
    return (x > box[0]) & (x < box[2]) & (y > box[1]) & (y < box[3])


def _fw(strategy, **kw):
    args = dict(quality=_q(), points=PTS, gt_boxes=BOXES, k=9)
    args.update(kw)
    return foreground_weights(strategy, **args)


def test_strategy_names():
    assert STRATEGIES == ("box", "box_gauss", "centre", "quality", "topk_eq", "kde", "pgw")
    assert BOX_GAUSS_SIGMA == pytest.approx(1 / 6) and CENTRE_RATIO == 0.2


def test_box():
    w = _fw("box")
    exp = (_inside(PTS, BOXES[0]) | _inside(PTS, BOXES[1])).float()
    assert torch.equal(w, exp)
    assert 0 < exp.sum() < len(exp)
    # does not need quality or k
    w2 = foreground_weights("box", points=PTS, gt_boxes=BOXES)
    assert torch.equal(w2, exp)


def test_box_gauss_values():
    pts = torch.tensor([[10.0, 15.0], [14.0, 15.0], [10.0, 21.0], [14.0, 21.0], [25.0, 15.0],
                        [20.0, 15.0]])
    box = torch.tensor([[0.0, 0.0, 20.0, 30.0]])  # centre (10, 15), w 20, h 30
    w = foreground_weights("box_gauss", points=pts, gt_boxes=box)
    sx, sy = 20 / 6, 30 / 6

    def g(dx, dy):
        return math.exp(-0.5 * ((dx / sx) ** 2 + (dy / sy) ** 2))

    exp = torch.tensor([1.0, g(4, 0), g(0, 6), g(4, 6), 0.0, 0.0])  # outside / on edge: 0
    torch.testing.assert_close(w, exp)
    w_wide = foreground_weights("box_gauss", points=pts, gt_boxes=box, box_gauss_sigma=0.5)
    assert w_wide[1].item() == pytest.approx(math.exp(-0.5 * (4 / 10) ** 2))
    # overlapping boxes: max
    both = foreground_weights("box_gauss", points=PTS, gt_boxes=BOXES)
    one = foreground_weights("box_gauss", points=PTS, gt_boxes=BOXES[:1])
    two = foreground_weights("box_gauss", points=PTS, gt_boxes=BOXES[1:])
    assert torch.equal(both, torch.maximum(one, two))


def test_centre_region():
    box = torch.tensor([[0.0, 0.0, 20.0, 30.0]])  # central region: 8 < x < 12, 12 < y < 18
    pts = torch.tensor([[10.0, 15.0], [11.9, 12.1], [12.0, 15.0], [10.0, 18.0], [7.9, 15.0],
                        [3.0, 3.0]])
    w = foreground_weights("centre", points=pts, gt_boxes=box)
    assert w.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    w5 = foreground_weights("centre", points=pts, gt_boxes=box, centre_ratio=0.5)
    assert w5.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # on the grid: the 2x2 box-centre region of each box holds few points, all weight 1
    wg = _fw("centre")
    assert set(wg.unique().tolist()) == {0.0, 1.0}
    assert 0 < wg.sum() < _fw("box").sum()


def test_quality_is_q_inside_without_topk():
    q = _q()
    w = _fw("quality", quality=q, k=1)
    exp = torch.maximum(q[:, 0] * _inside(PTS, BOXES[0]), q[:, 1] * _inside(PTS, BOXES[1]))
    torch.testing.assert_close(w, exp)
    assert int((w > 0).sum()) > 2  # not limited to the top-k (k = 1 here)
    assert foreground_weights("quality", quality=q, points=PTS, gt_boxes=BOXES).sum() > 0


def test_topk_eq_is_one_on_topk():
    q = _q()
    w = _fw("topk_eq", quality=q, k=7)
    assert set(w.unique().tolist()) == {0.0, 1.0}
    exp = torch.zeros(PTS.shape[0])
    for g in range(2):
        ins = _inside(PTS, BOXES[g])
        score = torch.where(ins, q[:, g], -1.0)
        exp[torch.topk(score, 7).indices] = 1.0
    assert torch.equal(w, exp)
    # same support as pgw
    assert torch.equal(w > 0, _fw("pgw", quality=q, k=7) > 0)


def test_topk_scope_applies_to_topk_strategies():
    pts = torch.tensor([[5.0, 5], [15, 5], [25, 5]])
    box = torch.tensor([[0.0, 0, 10, 10]])
    q = torch.tensor([[0.1], [0.9], [0.8]])
    for s in ("topk_eq", "kde", "pgw"):
        wi = foreground_weights(s, quality=q, points=pts, gt_boxes=box, k=1)
        wa = foreground_weights(s, quality=q, points=pts, gt_boxes=box, k=1, topk_scope="all")
        assert wi.tolist() == [1.0, 0.0, 0.0] and wa.tolist() == [0.0, 0.0, 0.0], s


def test_kde_hand_computed():
    pts = torch.tensor([[0.0, 0.0], [2.0, 0.0], [6.0, 0.0], [3.0, 7.0]])
    q = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    box = torch.tensor([[-1.0, -1.0, 10.0, 10.0]])
    w = foreground_weights("kde", quality=q, points=pts, gt_boxes=box, k=3)
    # collinear selection: 1-D KDE along x; Sigma_xx = 56/9, Scott h^2 = 3^(-1/3)
    H = 56 / 9 * 3 ** (-1 / 3)
    xs = [0.0, 2.0, 6.0]
    dens = [sum(math.exp(-0.5 * (a - b) ** 2 / H) for b in xs) / 3 for a in xs]
    exp = torch.tensor([d / max(dens) for d in dens] + [0.0])
    torch.testing.assert_close(w, exp)
    assert w[1].item() == 1.0  # the densest selected position is scaled to 1
    # a wider kernel flattens the weights
    w_wide = foreground_weights("kde", quality=q, points=pts, gt_boxes=box, k=3, kde_bandwidth=3.0)
    assert w_wide[2] > w[2] and w_wide[1].item() == 1.0
    # K = 1 gives 1
    w1 = foreground_weights("kde", quality=q, points=pts, gt_boxes=box, k=1)
    assert w1.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_kde_support_and_peak_on_grid():
    q = _q(4)
    w = _fw("kde", quality=q, k=12)
    assert torch.equal(w > 0, _fw("topk_eq", quality=q, k=12) > 0)
    for g in range(2):  # each box's weights peak at exactly 1 on its own selection
        wg = foreground_weights("kde", quality=q[:, g:g + 1], points=PTS, gt_boxes=BOXES[g:g + 1],
                                k=12)
        assert wg.max().item() == pytest.approx(1.0) and int((wg > 0).sum()) == 12
    assert not torch.equal(w, _fw("pgw", quality=q, k=12))


def test_pgw_strategy_is_pgw_importance():
    q = _q(7)
    for scope in ("inside", "all"):
        assert torch.equal(_fw("pgw", quality=q, k=9, topk_scope=scope),
                           pgw_importance(q, PTS, BOXES, 9, scope))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_gt_and_fp16(strategy):
    A = PTS.shape[0]
    w0 = foreground_weights(strategy, quality=torch.zeros(A, 0), points=PTS,
                            gt_boxes=torch.zeros(0, 4), k=9)
    assert w0.shape == (A,) and w0.abs().sum().item() == 0.0
    w16 = foreground_weights(strategy, quality=_q().half(), points=PTS.half(),
                             gt_boxes=BOXES.half(), k=9)
    assert w16.dtype == torch.float16 and torch.isfinite(w16).all() and w16.sum() > 0
    w32 = _fw(strategy, quality=_q().half().float())
    torch.testing.assert_close(w16.float(), w32, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize(
    "strategy, kwargs, match",
    [
        ("gauss", {}, "'gauss'.*box, box_gauss, centre, kde, pgw, quality, topk_eq"),
        ("pgw", dict(quality=None), "quality"),
        ("pgw", dict(k=None), "k"),
        ("topk_eq", dict(k=0), "k"),
        ("kde", dict(kde_bandwidth=0.0), "kde_bandwidth"),
        ("box_gauss", dict(box_gauss_sigma=-1.0), "box_gauss_sigma"),
        ("centre", dict(centre_ratio=1.5), "centre_ratio"),
        ("quality", dict(quality=torch.rand(3, 2)), "quality"),
        ("pgw", dict(topk_scope="everywhere"), "everywhere"),
    ],
)
def test_strategy_errors(strategy, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _fw(strategy, **kwargs)
