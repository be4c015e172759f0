"""The distiller's batched masks and level-concatenated losses equal the per-image /
per-level reference paths on a real (tiny) ATSS teacher, incl. an image without boxes."""

from __future__ import annotations

import pytest
import torch

from pgd.distill.masks import pgd_masks, pgd_masks_per_image
from pgd.testing import build_distiller, synthetic_batch

pytestmark = pytest.mark.usefixtures("scope")


def test_batched_step_equals_per_image_per_level_reference():
    torch.manual_seed(0)
    dist = build_distiller("atss_tiny", "atss_tiny", 6)
    data = synthetic_batch(dist, 3, 160, 192, boxes_per_image=5, num_classes=6)
    data["data_samples"][1].gt_instances = data["data_samples"][1].gt_instances[:0]  # no boxes
    with dist.s_adapter.capture() as s_feats:
        dist.student.loss(data["inputs"], data["data_samples"])
    records = dist.records(s_feats, data["inputs"], data["data_samples"])
    gts = [s.gt_instances for s in data["data_samples"]]
    args = (dist.t_adapter, records.teacher.head, [g.bboxes for g in gts], [g.labels for g in gts],
            dist.kd.mask_params)
    new, ref = pgd_masks(*args), pgd_masks_per_image(*args)
    torch.testing.assert_close(dist.kd.masks(records, data["data_samples"]).flat["fg_cls"], new.flat["fg_cls"])
    for key in ("fg_cls", "bg", "reg", "quality_cls", "imp_cls"):
        for a, b in zip(getattr(new, key), getattr(ref, key)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert sum(m[0].sum() for m in new.fg_cls) > 0 and sum(m[1].abs().sum() for m in new.fg_cls) == 0
    got = dist.kd.losses(records, new)
    dist.kd.reference = True
    want = dist.kd.losses(records, ref)
    assert set(got) == set(want) == {f"{b}_{t}" for b in ("cls", "reg") for t in ("fea", "att")}
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-8)


def test_mask_health_from_the_batched_inside_test_equals_per_image():
    """MaskHealth.observe_pgd: the batched masks' own inside test (padded GT) gives the same
    sums as the per-image counts (an image without boxes, a box holding no position)."""
    from pgd.core.mask_stats import batch_box_mask_support, box_mask_support
    from pgd.distill.health import MaskHealth

    torch.manual_seed(0)
    dist = build_distiller("atss_tiny", "atss_tiny", 6)
    data = synthetic_batch(dist, 3, 160, 192, boxes_per_image=5, num_classes=6)
    data["data_samples"][1].gt_instances = data["data_samples"][1].gt_instances[:0]  # no boxes
    data["data_samples"][2].gt_instances.bboxes[0] = torch.tensor([1.0, 1, 6, 6])  # between prior centres
    records = dist.records(dist.s_adapter.capture().__enter__(), data["inputs"], data["data_samples"])
    gts = [s.gt_instances for s in data["data_samples"]]
    args = (dist.t_adapter, records.teacher.head, [g.bboxes for g in gts], [g.labels for g in gts],
            dist.kd.mask_params)
    new, ref = pgd_masks(*args), pgd_masks_per_image(*args)
    assert new.inside is not None and ref.inside is None
    boxes = [g.bboxes for g in gts]
    pts = records.priors().centres
    for key in ("fg_cls", "reg"):
        n_b = batch_box_mask_support(new.flat[key], new.inside)
        for n, b in enumerate(boxes):
            assert n_b[n, : len(b)].tolist() == box_mask_support(new.flat[key][n], pts, b).tolist()
            assert n_b[n, len(b):].sum() == 0
    h_new, h_ref = MaskHealth(("cls", "reg")), MaskHealth(("cls", "reg"))
    h_new.observe_pgd(new, records.priors(), boxes)
    h_ref.observe_pgd(ref, records.priors(), boxes)
    assert set(h_new._sums) == set(h_ref._sums) == {"cls", "reg"}
    for k in h_ref._sums:
        assert h_new._sums[k].tolist() == h_ref._sums[k].tolist()
    assert h_ref._sums["cls"][1] >= 1  # the tiny box has no weighted position
