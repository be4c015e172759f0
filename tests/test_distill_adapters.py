"""Adapters decode the teacher like the detector does; each test would catch one of the
released code's bugs (GFL single stride, anchor-free x/y swap, masks mixed across images)."""

from __future__ import annotations

import pytest
import torch

from pgd.detectors import model_config
from pgd.distill.adapters import make_adapter
from pgd.distill.masks import PGDMaskParams, pgd_masks

pytestmark = pytest.mark.usefixtures("scope")


def build(name):
    from mmdet.registry import MODELS

    m = MODELS.build(model_config(name, 4))
    m.init_weights()
    m.eval()
    return m


SIZES = [(20, 24), (10, 12), (5, 6), (3, 3), (2, 2)]  # a 160x192 input, non-square on purpose


def test_gfl_decodes_each_level_with_its_own_stride():
    m = build("gfl_tiny")
    a = make_adapter("gfl", m)
    priors = a.priors(SIZES, "cpu")
    R = m.bbox_head.reg_max
    # every edge distribution puts all its mass on bin 2 -> distance 2 strides at every level
    preds = []
    for h, w in SIZES:
        logits = torch.full((1, 4, R + 1, h, w), -50.0)
        logits[:, :, 2] = 50.0
        preds.append(logits.reshape(1, 4 * (R + 1), h, w))
    boxes = a.decode(preds, priors)[0]
    start = 0
    for (h, w), stride, anchors in zip(SIZES, [8, 16, 32, 64, 128], priors.boxes_or_points):
        n = h * w
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        expect = torch.cat([centres - 2 * stride, centres + 2 * stride], 1)
        assert torch.allclose(boxes[start:start + n], expect, atol=1e-3), f"stride {stride}"
        start += n


@pytest.mark.parametrize("det", ["fcos", "autoassign"])
def test_anchor_free_points_are_x_then_y(det):
    m = build(f"{det}_tiny")
    a = make_adapter(det, m)
    priors = a.priors(SIZES, "cpu")
    # P3 cell (row 1, col 3): x = (3 + offset) * 8, y = (1 + offset) * 8 with the head's own
    # offset (FCOS 0.5, AutoAssign 0)
    off = m.bbox_head.prior_generator.offset
    h, w = SIZES[0]
    x, y = (3 + off) * 8, (1 + off) * 8
    assert priors.centres[1 * w + 3].tolist() == [x, y]
    # distances (left, top, right, bottom) = (1, 2, 3, 4) px everywhere
    preds = [torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1).expand(1, 4, hh, ww) for hh, ww in SIZES]
    boxes = a.decode(preds, priors)[0]
    assert boxes[1 * w + 3].tolist() == [x - 1, y - 2, x + 3, y + 4]


def test_anchor_centres_and_delta_decoding_match_mmdet():
    m = build("atss_tiny")
    a = make_adapter("atss", m)
    priors = a.priors(SIZES, "cpu")
    anchors = m.bbox_head.prior_generator.grid_priors(SIZES, device="cpu")
    assert torch.equal(priors.centres[:SIZES[0][0] * SIZES[0][1]], (anchors[0][:, :2] + anchors[0][:, 2:]) / 2)
    zeros = [torch.zeros(1, 4, h, w) for h, w in SIZES]  # zero deltas decode to the anchors
    assert torch.allclose(a.decode(zeros, priors)[0], torch.cat(anchors), atol=1e-4)


def test_masks_never_mix_images_of_a_batch():
    m = build("atss_tiny")
    a = make_adapter("atss", m)
    x = torch.randn(3, 3, 160, 192)
    with torch.no_grad():
        outs = m.bbox_head(m.extract_feat(x))
    boxes = [torch.tensor([[20.0, 30, 90, 110]]), torch.zeros(0, 4), torch.tensor([[100.0, 40, 180, 150]])]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long), torch.tensor([2])]
    params = PGDMaskParams(strategy="pgw", xi_cls=0.8, xi_reg=0.6, k_cls=9, k_reg=9, topk_scope="inside")
    masks = pgd_masks(a, outs, boxes, labels, params)
    fg0 = torch.cat([l[0].flatten() for l in masks.fg_cls])
    fg1 = torch.cat([l[1].flatten() for l in masks.fg_cls])
    fg2 = torch.cat([l[2].flatten() for l in masks.fg_cls])
    assert fg0.sum() > 0 and fg2.sum() > 0
    assert fg1.abs().sum() == 0  # the image without boxes gets no foreground
    assert all(l[1].min() > 0 for l in masks.bg)  # ... and an all-ones (normalised) background
    # image 0's foreground lies inside its own box only, never inside image 2's box
    priors = a.priors([tuple(l.shape[-2:]) for l in masks.bg], "cpu")
    c = priors.centres
    in0 = (c[:, 0] > 20) & (c[:, 0] < 90) & (c[:, 1] > 30) & (c[:, 1] < 110)
    assert (fg0[~in0] == 0).all() and (fg2[in0 & ~((c[:, 0] > 100) & (c[:, 1] > 40))] == 0).all()
    # level normalisation: each level of image 0 with foreground sums to the mean of its weights
    reg1 = torch.cat([l[1].flatten() for l in masks.reg])
    assert reg1.abs().sum() == 0
