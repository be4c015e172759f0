"""The batched masks (pgd.core.masks.batch_masks) equal the per-image reference
(pgd.core.pgd_method.image_masks) on random batches with varying box counts, incl. zero."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pgd.config.names import STRATEGIES
from pgd.core import box_iou_pairs
from pgd.core.masks import batch_box_iou, batch_masks, pad_gt

SIZES = [(10, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
STRIDES = [8, 16, 32, 64, 128]


def _priors(na):
    pts = []
    for (h, w), s in zip(SIZES, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1).float())
    c = torch.cat(pts)
    return SimpleNamespace(centres=c, level_sizes=[h * w for h, w in SIZES], featmap_sizes=SIZES,
                           num_anchors=na)


def _case(seed, counts, na, C=5):
    g = torch.Generator().manual_seed(seed)
    pr = _priors(na)
    A = pr.centres.shape[0]
    N = len(counts)
    probs = torch.rand(N, A * na, C, generator=g)
    ctr = pr.centres.repeat_interleave(na, 0)
    wh = 4 + torch.rand(N, A * na, 2, generator=g) * 60
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1) + torch.randn(N, A * na, 4, generator=g) * 4
    gts, labs = [], []
    for n in range(N):
        xy = torch.rand(counts[n], 2, generator=g) * torch.tensor([96.0, 80.0])
        s = 6 + torch.rand(counts[n], 2, generator=g) * 50
        gts.append(torch.cat([xy, xy + s], 1))
        labs.append(torch.randint(0, C, (counts[n],), generator=g))
    return pr, probs, boxes, gts, labs


def _compare(pr, probs, boxes, gts, labs, cfg):
    from pgd.core.pgd_method import PGDMaskParams, image_masks

    gb, gl, gv = pad_gt(gts, labs)
    params = dict(cfg.get("strategy_params") or {})
    got = batch_masks(probs, boxes, pr.centres, pr.level_sizes, pr.num_anchors, gb, gl, gv,
                      strategy=cfg["strategy"], xi_cls=cfg["xi_cls"], xi_reg=cfg["xi_reg"],
                      k_cls=cfg["k_cls"], k_reg=cfg["k_reg"], topk_scope=cfg["topk_scope"], **params)
    for n in range(len(gts)):
        ref = image_masks(probs[n], boxes[n], pr, gts[n], labs[n], PGDMaskParams.from_mapping(cfg))
        for key, r in zip(("fg_cls", "bg", "reg", "quality_cls", "imp_cls"), ref):
            torch.testing.assert_close(got[key][n], r, rtol=1e-6, atol=1e-7, msg=f"{key} image {n}")
    return got


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("scope", ["inside", "all"])
@pytest.mark.parametrize("k_reg", [5, 9])  # 9: both branches share one top-K pass
def test_batch_masks_equal_per_image_every_strategy(strategy, scope, k_reg):
    cfg = dict(strategy=strategy, xi_cls=0.8, xi_reg=0.6, k_cls=9, k_reg=k_reg, topk_scope=scope)
    for seed, counts, na in ((0, [3, 0, 7], 1), (1, [1, 12], 2), (2, [0, 40, 2, 5], 1)):
        got = _compare(*_case(seed, counts, na), cfg)
        assert got["imp_cls"].sum() > 0


def test_batch_masks_zero_boxes_everywhere_and_one_image():
    cfg = dict(strategy="pgw", xi_cls=0.8, xi_reg=0.6, k_cls=9, k_reg=9, topk_scope="inside")
    got = _compare(*_case(3, [0, 0], 1), cfg)
    assert got["fg_cls"].abs().sum() == 0 and got["reg"].abs().sum() == 0
    A = sum(h * w for h, w in SIZES)
    assert got["bg"].shape == (2, A) and torch.allclose(got["bg"][:, :120].sum(1), torch.ones(2))
    _compare(*_case(4, [6], 1), cfg)


def test_batch_masks_strategy_params():
    cfg = dict(strategy="box_gauss", xi_cls=0.5, xi_reg=0.5, k_cls=3, k_reg=3, topk_scope="inside",
               strategy_params=dict(box_gauss_sigma=0.3))
    _compare(*_case(5, [4, 2], 1), cfg)
    cfg = dict(strategy="kde", xi_cls=0.5, xi_reg=0.7, k_cls=4, k_reg=7, topk_scope="inside",
               strategy_params=dict(kde_bandwidth=0.5))
    _compare(*_case(6, [4, 0, 2], 1), cfg)


def test_batch_box_iou_equals_pairs_and_pad_gt():
    g = torch.Generator().manual_seed(7)
    b = torch.rand(2, 30, 4, generator=g) * 50
    b[..., 2:] += b[..., :2]
    gts = [torch.tensor([[1.0, 2, 30, 40], [5, 5, 6, 6]]), torch.zeros(0, 4)]
    gb, gl, gv = pad_gt(gts, [torch.tensor([1, 2]), torch.zeros(0, dtype=torch.long)])
    assert gb.shape == (2, 2, 4) and gv.tolist() == [[True, True], [False, False]]
    assert gl.tolist() == [[1, 2], [0, 0]] and gb[1].abs().sum() == 0
    iou = batch_box_iou(b, gb)
    assert torch.equal(iou[0], box_iou_pairs(b[0], gts[0]))
    assert iou[1].abs().sum() == 0


def test_batch_masks_refuses_bad_shapes():
    from pgd.errors import ConfigError

    pr, probs, boxes, gts, labs = _case(8, [2, 1], 1)
    gb, gl, gv = pad_gt(gts, labs)
    with pytest.raises(ConfigError, match="shape mismatch"):
        batch_masks(probs, boxes[:, :-1], pr.centres, pr.level_sizes, 1, gb, gl, gv,
                    xi_cls=0.5, xi_reg=0.5, k_cls=3, k_reg=3)
    with pytest.raises(ConfigError, match="k_cls"):
        batch_masks(probs, boxes, pr.centres, pr.level_sizes, 1, gb, gl, gv,
                    xi_cls=0.5, xi_reg=0.5, k_cls=None, k_reg=3)
