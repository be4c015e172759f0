"""pgd.core.crosskd: CrossKD's and PKD's losses on hand-computed tiny cases, against mmdet's own
loss modules (the ones CrossKD's configs build) and numpy's Pearson correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgd.core.crosskd import (
    MMDET_EPS,
    align_scale,
    aligned_box_overlaps,
    crosskd_atss_terms,
    crosskd_fcos_terms,
    crosskd_gfl_terms,
    kd_kl_div,
    kd_quality_focal_loss,
    pkd_loss,
    pkd_loss_terms,
)
from pgd.errors import ConfigError

LN3 = math.log(3.0)
SIG = 1 / (1 + math.exp(-LN3))  # sigmoid(ln 3) = 0.75


# ----------------------------------------------------------------------------- hand cases
def test_kd_quality_focal_loss_by_hand():
    # one row, one class: z = 0 (p_s = 0.5), teacher logit ln 3 (p_t = 0.75):
    # BCE(0.5, 0.75) = ln 2, focal |0.5 - 0.75|^1 = 0.25, avg_factor 2
    loss = kd_quality_focal_loss(torch.zeros(1, 1), torch.full((1, 1), LN3), beta=1.0, avg_factor=2.0)
    assert loss.item() == pytest.approx(0.25 * math.log(2) / (2 + MMDET_EPS), rel=1e-6)
    # beta 2 squares the focal factor; a zero row weight drops the row
    loss2 = kd_quality_focal_loss(torch.zeros(2, 1), torch.full((2, 1), LN3), torch.tensor([1.0, 0.0]),
                                  beta=2.0, avg_factor=1.0)
    assert loss2.item() == pytest.approx(0.0625 * math.log(2), rel=1e-6)
    same = kd_quality_focal_loss(torch.full((1, 1), LN3), torch.full((1, 1), LN3), beta=1.0, avg_factor=1.0)
    assert same.item() == 0.0  # identical predictions: focal factor 0


def test_gfl_recipe_by_hand():
    # M = 1 anchor, K = 1 class, reg_max = 1 (2 bins per edge); the cross-head predicts zeros,
    # the teacher logit ln 3 for the class and (0, ln 3) on every edge
    rc, tc = torch.zeros(1, 1), torch.full((1, 1), LN3)
    rd, td = torch.zeros(1, 8), torch.tensor([[0.0, LN3] * 4])
    t = crosskd_gfl_terms(rc, tc, rd, td, torch.ones(1), 1.0, beta=1.0, temp=1.0, w_cls=1.0, w_reg=4.0)
    assert t["cls"].item() == pytest.approx(0.25 * math.log(2) / (1 + MMDET_EPS), rel=1e-6)
    # per edge KL((0.25, 0.75) || (0.5, 0.5)); weight w = sigmoid(ln 3) cancels against sum w;
    # 4 edges / (4 + eps)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert t["reg"].item() == pytest.approx(4.0 * 4 * SIG * kl / (4 + MMDET_EPS) / SIG, rel=1e-6)
    # T = 2 softens both sides and multiplies by T^2
    t2 = crosskd_gfl_terms(rc, tc, rd, td, torch.ones(1), 1.0, beta=1.0, temp=2.0, w_cls=1.0, w_reg=1.0)
    q = torch.softmax(torch.tensor([0.0, LN3 / 2]), 0)
    kl2 = float((q * (q / 0.5).log()).sum()) * 4
    assert t2["reg"].item() == pytest.approx(4 * kl2 / (4 + MMDET_EPS), rel=1e-5)


def test_atss_recipe_by_hand():
    # reused box (0, 0, 2, 2), teacher's (1, 1, 3, 3): IoU 1/7, enclosure 9 -> GIoU 1/7 - 2/9
    rb, tb = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    assert aligned_box_overlaps(rb, tb, "giou").item() == pytest.approx(1 / 7 - 2 / 9, rel=1e-6)
    rc, tc = torch.zeros(1, 1), torch.full((1, 1), LN3)
    ctr_r, ctr_t = torch.zeros(1), torch.full((1,), LN3)  # BCE(0.5, 0.75) = ln 2
    t = crosskd_atss_terms(rc, tc, rb, tb, ctr_r, ctr_t, torch.ones(1), torch.tensor([True]), 2.0,
                           beta=1.0, w_cls=1.0, w_reg=1.0, w_center=1.0)
    assert t["reg"].item() == pytest.approx(SIG * (1 - (1 / 7 - 2 / 9)) / (2 + MMDET_EPS), rel=1e-6)
    assert t["center"].item() == pytest.approx(math.log(2) / (2 + MMDET_EPS), rel=1e-6)
    # not a positive of the student's assignment: no centerness KD; label weight 0: no box KD
    t = crosskd_atss_terms(rc, tc, rb, tb, ctr_r, ctr_t, torch.zeros(1), torch.tensor([False]), 2.0,
                           beta=1.0, w_cls=1.0, w_reg=1.0, w_center=1.0)
    assert t["center"].item() == 0 and t["reg"].item() == 0 and t["cls"].item() == 0


def test_fcos_recipe_by_hand():
    rb, tb = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    rc, tc = torch.zeros(1, 1), torch.full((1, 1), LN3)
    t = crosskd_fcos_terms(rc, tc, rb, tb, 0.5, beta=1.0, w_cls=0.4, w_reg=0.75)
    assert t["cls"].item() == pytest.approx(0.4 * 0.25 * math.log(2) / (0.5 + MMDET_EPS), rel=1e-6)
    assert t["reg"].item() == pytest.approx(0.75 * SIG * math.log(7) / (0.5 + MMDET_EPS), rel=1e-6)
    # disjoint boxes: IoU clamped at 1e-6 -> -log(1e-6)
    far = crosskd_fcos_terms(rc, tc, rb, tb + 10, 1.0, beta=1.0, w_cls=0.0, w_reg=1.0)
    assert far["reg"].item() == pytest.approx(SIG * -math.log(1e-6), rel=1e-5)


def test_align_scale_gives_the_student_the_teachers_channel_statistics():
    torch.manual_seed(0)
    fs = (torch.randn(2, 3, 4, 5) * 3 + 1).requires_grad_(True)
    ft = torch.randn(2, 3, 4, 5) * torch.tensor([0.5, 2.0, 4.0]).view(1, 3, 1, 1) - 2
    out = align_scale(fs, ft)
    assert torch.allclose(out.mean((0, 2, 3)), ft.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(out.std((0, 2, 3)), ft.std((0, 2, 3)), rtol=1e-4)
    # by hand on one channel of 3 values: (0, 1, 2) -> z = (-1, 0, 1); teacher (10, 10, 16):
    # mean 12, unbiased std sqrt(12) -> 12 + z sqrt(12) (the 1e-6 of the code ignored)
    hand = align_scale(torch.tensor([0.0, 1, 2]).view(1, 1, 1, 3), torch.tensor([10.0, 10, 16]).view(1, 1, 1, 3))
    assert hand.flatten().tolist() == pytest.approx([12 - math.sqrt(12), 12, 12 + math.sqrt(12)], rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(fs.grad).all()


def test_pkd_is_one_minus_the_pearson_correlation_per_channel():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    t = (0.6 * s + rng.normal(size=s.shape)).astype(np.float32)
    n = 2 * 4 * 4
    r = [np.corrcoef(s[:, c].ravel(), t[:, c].ravel())[0, 1] for c in range(3)]
    # mean over elements of (z_s - z_t)^2 / 2 with unbiased std = (n - 1) / n * (1 - r), per channel
    expect = np.mean([(n - 1) / n * (1 - rc) for rc in r])
    assert pkd_loss(torch.from_numpy(s), torch.from_numpy(t)).item() == pytest.approx(expect, rel=1e-4)
    assert pkd_loss(torch.from_numpy(s), torch.from_numpy(3 * s + 1)).item() == pytest.approx(0.0, abs=1e-6)
    terms = pkd_loss_terms([torch.from_numpy(s)] * 2, [torch.from_numpy(t)] * 2, weight=6.0)
    assert terms["feat"].item() == pytest.approx(12 * expect, rel=1e-4)


# ----------------------------------------------------------------------------- mmdet oracles
def test_losses_match_mmdets_modules_that_crosskds_configs_build():
    from mmdet.models.losses import (
        CrossEntropyLoss,
        GIoULoss,
        IoULoss,
        KnowledgeDistillationKLDivLoss,
    )

    torch.manual_seed(0)
    M, bins = 40, 17
    pred, soft = torch.randn(M, bins), torch.randn(M, bins) * 2
    w = torch.rand(M)
    # mmdet's KD loss averages over the bins (class_reduction 'mean'); CrossKD's sums them
    ref = KnowledgeDistillationKLDivLoss(loss_weight=1.0, T=2)(pred, soft, weight=w, avg_factor=3.0)
    ours = (w * kd_kl_div(pred, soft, 2.0) / bins).sum() / (3.0 + MMDET_EPS)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    xy = torch.rand(M, 2) * 50
    a = torch.cat([xy, xy + 5 + torch.rand(M, 2) * 30], 1)
    b = a + torch.randn(M, 4) * 4
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 1)
    rw = torch.randn(M, 1)
    t = crosskd_atss_terms(torch.zeros(M, 1), rw, a, b, torch.zeros(M), torch.zeros(M), torch.ones(M),
                           torch.ones(M, dtype=torch.bool), 7.0, beta=1.0, w_cls=0.0, w_reg=1.0, w_center=0.0)
    ref = GIoULoss(loss_weight=1.0)(a, b, weight=rw.sigmoid()[:, 0], avg_factor=7.0)
    assert t["reg"].item() == pytest.approx(ref.item(), rel=1e-5)
    t = crosskd_fcos_terms(torch.zeros(M, 1), rw, a, b, 7.0, beta=1.0, w_cls=0.0, w_reg=0.75)
    ref = IoULoss(loss_weight=0.75)(a, b, weight=rw.sigmoid()[:, 0], avg_factor=7.0)
    assert t["reg"].item() == pytest.approx(ref.item(), rel=1e-5)
    zc, tcn = torch.randn(M), torch.randn(M)
    pos = torch.rand(M) > 0.5
    t = crosskd_atss_terms(torch.zeros(M, 1), rw, a, b, zc, tcn, torch.ones(M), pos, 7.0, beta=1.0,
                           w_cls=0.0, w_reg=0.0, w_center=1.0)
    ref = CrossEntropyLoss(use_sigmoid=True, loss_weight=1.0)(zc[pos], tcn[pos].sigmoid(), avg_factor=7.0)
    assert t["center"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_gradients_reach_the_cross_head_side_only():
    torch.manual_seed(0)
    rc, tc = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    rd, td = torch.randn(6, 20, requires_grad=True), torch.randn(6, 20, requires_grad=True)
    t = crosskd_gfl_terms(rc, tc, rd, td, torch.ones(6), 2.0, beta=1.0, temp=1.0, w_cls=1.0, w_reg=4.0)
    assert all(torch.isfinite(v) and v > 0 for v in t.values())
    sum(t.values()).backward()
    assert tc.grad is None and td.grad is None
    assert rc.grad.abs().sum() > 0 and rd.grad.abs().sum() > 0


@pytest.mark.parametrize("call, match", [
    (lambda: crosskd_gfl_terms(torch.zeros(2, 1), torch.zeros(3, 1), torch.zeros(2, 8), torch.zeros(2, 8),
                               torch.ones(2), 1.0, beta=1.0, temp=1.0, w_cls=1.0, w_reg=1.0), "rows"),
    (lambda: crosskd_gfl_terms(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 6), torch.zeros(2, 6),
                               torch.ones(2), 1.0, beta=1.0, temp=1.0, w_cls=1.0, w_reg=1.0), "4 \\* \\(reg_max"),
    (lambda: kd_kl_div(torch.zeros(2, 3), torch.zeros(2, 3), 0.5), "temp=0.5 must be >= 1"),
    (lambda: aligned_box_overlaps(torch.zeros(2, 4), torch.zeros(2, 4), "diou"), "mode"),
    (lambda: pkd_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3)), "shape"),
])
def test_bad_inputs_raise_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
