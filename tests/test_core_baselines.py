"""pgd.core.baselines: the KD baselines' math on hand-computed tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgd.core import spatial_attention
from pgd.core.baselines import (
    GcBlock,
    NonLocalBlock,
    box_cells,
    defeat_loss_terms,
    fgd_loss_terms,
    fgd_masks,
    fgfi_loss_terms,
    fgfi_mask,
    fkd_attention_masks,
    fkd_loss_terms,
    fpn_level_by_scale,
    frs_loss_terms,
    frs_richness,
    global_channel_attention,
    legacy_iou_pairs,
)
from pgd.errors import ConfigError

FGD_W = dict(temp=0.5, alpha=1.0, beta=1.0, gamma=1.0, lambda_=1.0)


def _ids(n):
    return [nn.Identity() for _ in range(n)]


def fkd_modules(n=1, identity=True, c_s=4, c_t=4):
    if identity:
        return dict(adapt=_ids(n), channel_adapt=_ids(n), spatial_adapt=_ids(n), nl_s=_ids(n),
                    nl_t=_ids(n), nl_adapt=_ids(n))
    return dict(
        adapt=[nn.Conv2d(c_s, c_t, 1) for _ in range(n)],
        channel_adapt=[nn.Linear(c_s, c_t) for _ in range(n)],
        spatial_adapt=[nn.Conv2d(1, 1, 3, padding=1) for _ in range(n)],
        nl_s=[NonLocalBlock(c_s, 2) for _ in range(n)],
        nl_t=[NonLocalBlock(c_t, 2) for _ in range(n)],
        nl_adapt=[nn.Conv2d(c_s, c_t, 1) for _ in range(n)],
    )


FKD_W = dict(temp=0.1, w_feat=1.0, w_channel=1.0, w_spatial=1.0, w_relation=1.0)


# ----------------------------------------------------------------------------- boxes -> cells
def test_fgd_fg_mask_of_one_box_with_fractional_edges():
    # FGD's code: columns floor(0.5)=0 .. ceil(2.5)=3 and rows floor(1)=1 .. ceil(3)=3, both ends
    # included: 4 x 3 = 12 cells of 1/12
    fg, bg = fgd_masks(torch.tensor([[0.5, 1.0, 2.5, 3.0]]), 4, 4)
    expect = torch.zeros(4, 4)
    expect[1:4, 0:4] = 1 / 12
    assert torch.allclose(fg, expect)
    assert torch.allclose(bg, (expect == 0).float() / 4)  # the 4 cells of row 0, normalised
    assert bg.sum().item() == pytest.approx(1.0)
    # the overlap rule (option): columns 0..2, rows 1..2 -> 6 cells of 1/6
    fg, _ = fgd_masks(torch.tensor([[0.5, 1.0, 2.5, 3.0]]), 4, 4, inclusive=False)
    expect = torch.zeros(4, 4)
    expect[1:3, 0:3] = 1 / 6
    assert torch.allclose(fg, expect)


def test_fgd_area_of_a_box_leaving_the_map_is_unclipped():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0],  # cells 0..4 -> clipped to the 16 cells, area 5*5
                          [1.0, 1.0, 2.0, 2.0],  # cells 1..2 x 1..2: 4 cells of 1/4
                          [2.5, 2.5, 10.0, 10.0]])  # cells 2..10 -> 2..3 on the map, area 9*9
    fg, bg = fgd_masks(boxes, 4, 4)
    assert fg[0, 0] == pytest.approx(1 / 25) and fg[0, 3] == pytest.approx(1 / 25)
    assert fg[1, 1] == pytest.approx(1 / 4) and fg[2, 2] == pytest.approx(1 / 4)  # max(1/25, 1/4, 1/81)
    assert fg[3, 3] == pytest.approx(1 / 25)  # max(1/25, 1/81)
    assert bg.sum() == 0  # every cell is foreground: no background left, no division by 0
    # clipped_area (option): the last box counts only its 4 cells on the map -> 1/4
    fg_c, _ = fgd_masks(boxes, 4, 4, clipped_area=True)
    assert fg_c[3, 3] == pytest.approx(1 / 4) and fg_c[0, 0] == pytest.approx(1 / 16)


def test_fgd_masks_with_both_options_are_the_overlap_cells_and_their_count():
    # inclusive=False + clipped_area=True: the cells each box overlaps, weighed by their number
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0], [2.5, 2.5, 10.0, 10.0]])
    fg, _ = fgd_masks(boxes, 4, 4, inclusive=False, clipped_area=True)
    assert fg[1, 1] == 1.0 and fg[0, 0] == pytest.approx(1 / 16)
    assert fg[3, 3] == pytest.approx(1 / 4) and fg[2, 2] == pytest.approx(1 / 4)
    # a point box covers the cell holding it; with the code's rule it covers up to ceil() too
    pt = torch.tensor([[1.2, 2.7, 1.2, 2.7]])
    assert fgd_masks(pt, 4, 5, inclusive=False)[0].nonzero().tolist() == [[2, 1]]
    assert fgd_masks(pt, 4, 5)[0].nonzero().tolist() == [[2, 1], [2, 2], [3, 1], [3, 2]]


def test_box_cells_edges_degenerate_and_empty():  # DeFeat's cells (the overlap rule)
    cells = box_cells(torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.2, 2.7, 1.2, 2.7]]), 4, 5)
    assert cells[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]  # integer edges: 2x2
    assert cells[1].nonzero().tolist() == [[2, 1]]  # a point: the cell holding it
    fg, bg = fgd_masks(torch.zeros(0, 4), 3, 3)
    assert fg.sum() == 0 and torch.allclose(bg, torch.full((3, 3), 1 / 9))


# ----------------------------------------------------------------------------- FGD
def test_global_channel_attention_sums_to_c_per_image():
    f = torch.randn(2, 5, 3, 4)
    a = global_channel_attention(f, 0.5)
    assert a.shape == (2, 5) and torch.allclose(a.sum(1), torch.full((2,), 5.0))
    assert torch.allclose(global_channel_attention(torch.ones(1, 3, 2, 2), 0.5), torch.ones(1, 3))


def test_fgd_terms_on_a_hand_case():
    # N = C = H = 1, W = 2; teacher all zeros -> S^T = Cattn^T = 1; student (1, 2)
    fs = torch.tensor([[[[1.0, 2.0]]]])
    ft = torch.zeros(1, 1, 1, 2)
    fg, bg = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    gc = [GcBlock(1)], [GcBlock(1)]  # zero-initialised: GC(F) = 0
    t = fgd_loss_terms([fs], [ft], [fg], [bg], *gc, **dict(FGD_W, alpha=2.0, lambda_=0.5))
    s = [2 * math.exp(2) / (math.exp(2) + math.exp(4)), 2 * math.exp(4) / (math.exp(2) + math.exp(4))]
    assert t["fg"].item() == pytest.approx(2.0 * 1.0)  # alpha * 1 * (1 - 0)^2
    assert t["bg"].item() == pytest.approx(4.0)  # (2 - 0)^2
    assert t["att"].item() == pytest.approx(abs(s[0] - 1) + abs(s[1] - 1), rel=1e-5)
    assert t["global"].item() == pytest.approx(0.5 * 5.0)


def test_fgd_identical_features_give_zero_and_grads_reach_student_side_only():
    torch.manual_seed(0)
    ft = torch.randn(2, 4, 3, 5, requires_grad=True)
    fs = ft.detach().clone().requires_grad_(True)
    fg, bg = torch.rand(2, 3, 5), torch.rand(2, 3, 5)
    gc_s, gc_t = [GcBlock(4)], [GcBlock(4)]
    t = fgd_loss_terms([fs], [ft], [fg], [bg], gc_s, gc_t, **FGD_W)
    assert all(v.item() == 0 for v in t.values()), t
    # different features: every term positive; gradients reach F^S and both GcBlocks, never F^T
    fs2 = (ft.detach() + torch.randn_like(ft)).requires_grad_(True)
    nn.init.normal_(gc_s[0].channel_add[-1].weight)
    nn.init.normal_(gc_t[0].channel_add[-1].weight)
    t = fgd_loss_terms([fs2], [ft], [fg], [bg], gc_s, gc_t, **FGD_W)
    assert all(v.item() > 0 for v in t.values()), t
    sum(t.values()).backward()
    assert ft.grad is None and fs2.grad.abs().sum() > 0
    assert all(p.grad is not None for p in [*gc_s[0].parameters(), *gc_t[0].parameters()])


def test_gc_block_starts_at_zero():
    block = GcBlock(6)
    out = block(torch.randn(2, 6, 4, 3))
    assert out.shape == (2, 6, 1, 1) and out.abs().sum() == 0


# ----------------------------------------------------------------------------- DeFeat
def test_defeat_level_assignment_by_scale():
    sides = [50.0, 111.9, 112.0, 223.0, 224.0, 500.0, 896.0, 2000.0]
    boxes = torch.tensor([[0.0, 0.0, s, s] for s in sides])
    assert fpn_level_by_scale(boxes, 5).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    assert fpn_level_by_scale(boxes, 5, finest_scale=28.0).tolist() == [0, 1, 2, 2, 3, 4, 4, 4]
    wide = torch.tensor([[0.0, 0.0, 400.0, 100.0]])  # sqrt(w h) = 200 -> P4
    assert fpn_level_by_scale(wide, 5).tolist() == [1]


def test_defeat_terms_on_a_hand_case():
    # level 0: C = 2, W = 2, fg on the first cell; diffs (1, 2) and (3, 4) per channel
    ft = torch.zeros(1, 2, 1, 2)
    fs = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    m = torch.tensor([[[1.0, 0.0]]])
    same = torch.randn(1, 2, 2, 2)
    t = defeat_loss_terms([fs, same], [ft, same], [m, torch.zeros(1, 2, 2)], w_fg=3.0, w_bg=12.0)
    # fg: (1 + 9) / (2 * 1 * 2) = 2.5, bg: (4 + 16) / (2 * 1 * 2) = 5; level 1 gives 0; mean of 2
    assert t["fg"].item() == pytest.approx(3.0 * 2.5 / 2)
    assert t["bg"].item() == pytest.approx(12.0 * 5.0 / 2)


def test_defeat_identical_features_zero_and_teacher_gets_no_grad():
    ft = torch.randn(2, 3, 4, 4, requires_grad=True)
    m = (torch.rand(2, 4, 4) > 0.5).float()
    t = defeat_loss_terms([ft.detach().clone()], [ft], [m], w_fg=1.0, w_bg=1.0)
    assert t["fg"].item() == 0 and t["bg"].item() == 0
    fs = torch.randn(2, 3, 4, 4, requires_grad=True)
    sum(defeat_loss_terms([fs], [ft], [m], w_fg=1.0, w_bg=1.0).values()).backward()
    assert ft.grad is None and fs.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- FRS
def test_frs_richness_weighting_and_ramp():
    # 1 image, 1 channel, 2 positions; teacher logits: class maxima 2 and 0 -> R = (s(2), 0.5)
    zt = torch.tensor([[[[2.0, -1.0]], [[-3.0, 0.0]]]])  # [1, K=2, 1, 2]
    r = frs_richness(zt)
    assert torch.allclose(r, torch.tensor([[[torch.sigmoid(torch.tensor(2.0)).item(), 0.5]]]))
    ft = torch.zeros(1, 1, 1, 2)
    fs = torch.tensor([[[[1.0, 3.0]]]])
    zs = torch.zeros(1, 2, 1, 2)
    t = frs_loss_terms([fs], [ft], [zs], [zt], w_feat=1.0, w_cls=1.0)
    r0, r1 = r[0, 0].tolist()
    assert t["feat"].item() == pytest.approx((r0 * 1 + r1 * 9) / (r0 + r1), rel=1e-6)
    bce = F.binary_cross_entropy(torch.sigmoid(zs), torch.sigmoid(zt), reduction="none")
    assert t["cls"].item() == pytest.approx(((bce * r[:, None]).sum() / r.sum()).item(), rel=1e-6)
    half = frs_loss_terms([fs], [ft], [zs], [zt], w_feat=0.1, w_cls=0.05, ramp=0.5)
    assert half["feat"].item() == pytest.approx(0.05 * t["feat"].item(), rel=1e-6)
    assert half["cls"].item() == pytest.approx(0.025 * t["cls"].item(), rel=1e-6)


def test_frs_saturated_student_logits_match_the_authors_clamped_bce():
    # float32 sigmoid(z) == 1 for z > ~16.6: log(1 - p) = log(0), which torch's
    # binary_cross_entropy (the authors' call) clamps at -100; the exact BCE from logits is ~|z|
    zs = torch.tensor([[[[17.0, 30.0]], [[-40.0, 120.0]]]], requires_grad=True)  # [1, K=2, 1, 2]
    zt = torch.tensor([[[[0.0, 1.0]], [[-2.0, 0.5]]]])
    ft = torch.zeros(1, 1, 1, 2)
    t = frs_loss_terms([ft.clone()], [ft], [zs], [zt], w_feat=1.0, w_cls=1.0)
    r = frs_richness(zt)[:, None]
    oracle = F.binary_cross_entropy(torch.sigmoid(zs.detach()), torch.sigmoid(zt), reduction="none")
    assert t["cls"].item() == pytest.approx(((r * oracle).sum() / r.sum()).item(), rel=1e-6)
    exact = F.binary_cross_entropy_with_logits(zs.detach(), torch.sigmoid(zt), reduction="none")
    t_exact = frs_loss_terms([ft.clone()], [ft], [zs], [zt], w_feat=1.0, w_cls=1.0, bce_from_logits=True)
    assert t_exact["cls"].item() == pytest.approx(((r * exact).sum() / r.sum()).item(), rel=1e-6)
    assert t_exact["cls"].item() != pytest.approx(t["cls"].item(), rel=0.1)
    # by hand: z = 17, p_t = sigmoid(0) = 0.5: sigmoid(17) == 1.0 in float32, so the authors' BCE is
    # -(0.5 log 1 + 0.5 * (-100)) = 50, the exact one 0.5 * 17 + log(1 + e^-17) ~= 8.5
    assert oracle[0, 0, 0, 0].item() == 50.0 and exact[0, 0, 0, 0].item() == pytest.approx(8.5, rel=1e-6)
    t["cls"].backward()
    assert torch.isfinite(zs.grad).all()
    assert zs.grad[0, 0, 0, 1] == 0 and zs.grad[0, 1, 0, 1] == 0  # saturated: no gradient, as torch's


def test_frs_identical_features_zero_feat_and_grads():
    ft = torch.randn(2, 3, 4, 5, requires_grad=True)
    zt = torch.randn(2, 6, 4, 5, requires_grad=True)
    t = frs_loss_terms([ft.detach().clone()], [ft], [zt.detach().clone()], [zt], w_feat=1.0, w_cls=1.0)
    assert t["feat"].item() == 0 and t["cls"].item() >= 0
    fs = torch.randn(2, 3, 4, 5, requires_grad=True)
    zs = torch.randn(2, 6, 4, 5, requires_grad=True)
    sum(frs_loss_terms([fs], [ft], [zs], [zt], w_feat=1.0, w_cls=1.0).values()).backward()
    assert ft.grad is None and zt.grad is None
    assert fs.grad.abs().sum() > 0 and zs.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- FGFI
def test_fgfi_mask_from_known_anchors():
    anchors = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 20, 20]])
    # +1 IoU: GT 1 matches anchor 0 exactly (others 66/176, 0, 121/441 < 0.5); GT 2 matches anchor 2
    gts = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    assert fgfi_mask(anchors, gts, 1).tolist() == [True, False, True, False]
    # best +1 IoU 88/121 (anchor 1) -> threshold 0.364: anchors 0 (66/143) and 1, not 3 (88/441)
    assert fgfi_mask(anchors, torch.tensor([[5.0, 0, 12, 10]]), 1).tolist() == [True, True, False, False]
    # two anchors per location: a location is on if any of its anchors is
    assert fgfi_mask(anchors, gts[:1], 2).tolist() == [True, False]
    assert fgfi_mask(anchors, torch.tensor([[100.0, 100, 110, 110]]), 1).sum() == 0  # overlaps nothing
    assert fgfi_mask(anchors, torch.zeros(0, 4), 2).tolist() == [False, False]
    assert fgfi_mask(anchors, gts[:1], 1, ratio=0.2).tolist() == [True, True, False, True]
    assert fgfi_mask(anchors, gts[:1], 1, ratio=0.2, legacy_iou=False).tolist() == [True, True, False, True]


def test_legacy_iou_adds_one_pixel_and_flips_a_cell_near_the_threshold():
    gt = torch.tensor([[0.0, 0, 10, 10]])
    anchors = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 4.9]])
    # +1 convention: inter 11 * 5.9 = 64.9, union 121 + 64.9 - 64.9 = 121
    assert legacy_iou_pairs(anchors, gt)[:, 0].tolist() == pytest.approx([1.0, 64.9 / 121], rel=1e-6)
    # plain IoU 0.49 < 0.5 * 1: off; +1 IoU 0.536 > 0.5: on
    assert fgfi_mask(anchors, gt, 1, legacy_iou=False).tolist() == [True, False]
    assert fgfi_mask(anchors, gt, 1).tolist() == [True, True]
    # the code's padding marker (x2 == x1, y2 == y1: +1 area 1) has IoU 0
    assert legacy_iou_pairs(anchors, torch.tensor([[3.0, 3, 3, 3]])).sum() == 0


def test_fgfi_loss_one_normaliser_over_levels():
    ft = [torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 1)]
    fs = [torch.ones(1, 2, 1, 2), torch.full((1, 2, 1, 1), 2.0)]
    masks = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0]]])]
    # (2 channels * 1 + 2 channels * 4) / (2 * 2 locations) = 10 / 4
    t = fgfi_loss_terms(fs, ft, masks, weight=0.01)
    assert t["feat"].item() == pytest.approx(0.01 * 2.5)
    empty = [torch.zeros(1, 1, 2), torch.zeros(1, 1, 1)]
    none = fgfi_loss_terms(fs, ft, empty, weight=0.01)
    assert none["feat"].item() == 0  # our default: 0 without any mask cell
    assert math.isnan(fgfi_loss_terms(fs, ft, empty, weight=0.01, zero_without_mask=False)["feat"].item())  # code
    same = fgfi_loss_terms([f.clone() for f in ft], ft, masks, weight=0.01)
    assert same["feat"].item() == 0


# ----------------------------------------------------------------------------- FKD
def test_fkd_attention_masks_average_teacher_and_student():
    fs, ft = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5)
    p, q = fkd_attention_masks(fs, ft, 0.1)
    assert not p.requires_grad and not q.requires_grad
    assert torch.allclose(p, (spatial_attention(fs.detach(), 0.1) + spatial_attention(ft, 0.1)) / 2)
    assert torch.allclose(q, (global_channel_attention(fs.detach(), 0.1) + global_channel_attention(ft, 0.1)) / 2)
    assert torch.allclose(p.sum((1, 2)), torch.full((2,), 20.0)) and torch.allclose(q.sum(1), torch.full((2,), 3.0))


def test_fkd_terms_match_the_codes_formulas():
    torch.manual_seed(0)
    fs, ft = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    t = fkd_loss_terms([fs], [ft], **fkd_modules(), **dict(FKD_W, w_feat=2.0))
    p, q = fkd_attention_masks(fs, ft, 0.1)
    feat = ((ft - fs) ** 2 * p[:, None] * q[:, :, None, None]).sum().sqrt()  # the code's dist2
    assert t["feat"].item() == pytest.approx(2.0 * feat.item(), rel=1e-5)
    assert t["channel"].item() == pytest.approx(torch.dist(ft.mean((2, 3)), fs.mean((2, 3))).item(), rel=1e-5)
    assert t["spatial"].item() == pytest.approx(torch.dist(ft.mean(1), fs.mean(1)).item(), rel=1e-5)
    assert t["relation"].item() == pytest.approx(torch.dist(fs, ft).item(), rel=1e-5)
    # without the channel mask Q (MMRazor's port): || (F^T - F^S) sqrt(P) ||
    no_q = fkd_loss_terms([fs], [ft], **fkd_modules(), **dict(FKD_W, w_feat=2.0), channel_mask=False)
    assert no_q["feat"].item() == pytest.approx(2.0 * ((ft - fs) ** 2 * p[:, None]).sum().sqrt().item(), rel=1e-5)
    assert no_q["feat"].item() != pytest.approx(t["feat"].item(), rel=1e-3)
    assert all(no_q[k].item() == t[k].item() for k in ("channel", "spatial", "relation"))


def test_fkd_channel_mask_on_a_hand_case():
    # N = 1, C = 2, H = W = 1: P = 1; Q = the mean of both sides' 2 softmax(|F| / 0.1)
    fs, ft = torch.tensor([[[[0.0]], [[0.0]]]]), torch.tensor([[[[0.1]], [[0.0]]]])
    q0 = (2 * math.exp(1) / (math.exp(1) + 1) + 1) / 2  # teacher (e/(e+1), 1/(e+1)) * 2; student (1, 1)
    t = fkd_loss_terms([fs], [ft], **fkd_modules(), **FKD_W)
    assert t["feat"].item() == pytest.approx(math.sqrt(0.01 * q0), rel=1e-5)
    t = fkd_loss_terms([fs], [ft], **fkd_modules(), **FKD_W, channel_mask=False)
    assert t["feat"].item() == pytest.approx(0.1, rel=1e-5)


def test_fkd_identical_features_zero_and_grads_reach_student_side_only():
    ft = torch.randn(2, 4, 3, 5, requires_grad=True)
    t = fkd_loss_terms([ft.detach().clone()], [ft], **fkd_modules(), **FKD_W)
    assert all(v.item() == 0 for v in t.values()), t
    mods = fkd_modules(identity=False, c_s=3, c_t=4)  # narrower student: adapters map 3 -> 4
    fs = torch.randn(2, 3, 3, 5, requires_grad=True)
    t = fkd_loss_terms([fs], [ft], **mods, **FKD_W)
    assert all(torch.isfinite(v) and v > 0 for v in t.values()), t
    sum(t.values()).backward()
    assert ft.grad is None and fs.grad.abs().sum() > 0
    for name in ("adapt", "channel_adapt", "spatial_adapt", "nl_adapt"):
        assert mods[name][0].weight.grad is not None, name
    assert mods["nl_t"][0].W[0].weight.grad is not None  # the teacher-side block trains too


def test_non_local_block_is_identity_at_init_and_handles_tiny_maps():
    block = NonLocalBlock(8, 4, downsample_stride=8)
    x = torch.randn(2, 8, 1, 3)  # smaller than the pooling window: ceil_mode keeps one cell
    assert torch.equal(block(x), x)


# ----------------------------------------------------------------------------- checks
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: defeat_loss_terms([torch.rand(1, 2, 3, 3)], [torch.rand(1, 3, 3, 3)], [torch.rand(1, 3, 3)],
                                   w_fg=1.0, w_bg=1.0), "adapt conv"),
        (lambda: defeat_loss_terms([torch.rand(1, 2, 3, 3)], [torch.rand(1, 2, 3, 3)], [torch.rand(1, 2, 3)],
                                   w_fg=1.0, w_bg=1.0), r"\[N, H, W\]"),
        (lambda: fgfi_loss_terms([torch.rand(1, 2, 3, 3)], [torch.rand(1, 2, 3, 3)], [torch.rand(1, 3, 3)],
                                 weight=-1.0), "weight"),
        (lambda: frs_loss_terms([torch.rand(1, 2, 3, 3)] * 2, [torch.rand(1, 2, 3, 3)], [torch.rand(1, 4, 3, 3)],
                                [torch.rand(1, 4, 3, 3)], w_feat=1.0, w_cls=1.0), "one length"),
        (lambda: fgfi_mask(torch.rand(4, 4), torch.rand(1, 4), 1, ratio=0.0), "ratio"),
        (lambda: fpn_level_by_scale(torch.rand(2, 4), 5, finest_scale=0), "finest_scale"),
    ],
)
def test_bad_inputs_raise_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
