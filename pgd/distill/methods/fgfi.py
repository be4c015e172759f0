"""FGFI (Wang et al., CVPR 2019) on the FPN outputs through a 3x3 adapt conv, masked near
the GTs' best anchors; the math is :func:`pgd.core.baselines.fgfi_loss_terms`."""

from __future__ import annotations

import torch

from pgd.core.baselines import fgfi_loss_terms, fgfi_mask
from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD, gt_boxes
from pgd.errors import ConfigError


@register_method("fgfi")
class FGFI(NeckKD):
    """Term ``feat``. As FGFI's code, it is 0 for the first ``warm_iters`` training iterations
    (:meth:`KDMethod.current_iter`; ``warm_iters: 0`` imitates from the start)."""

    ADAPT = ("adapt",)

    def __init__(self, ctx: MethodContext, *, weight: float, iou_ratio: float, warm_iters: int, legacy_iou: bool,
                 zero_without_gt: bool):
        super().__init__(ctx)
        self.weight, self.iou_ratio, self.warm_iters = weight, iou_ratio, warm_iters
        self.legacy_iou, self.zero_without_gt = legacy_iou, zero_without_gt
        self.adapt = self.adapt_convs(3)

    @torch.no_grad()
    def masks(self, samples, feats, adapter) -> list[torch.Tensor]:
        """Per level ``[N, H, W]``: FGFI's mask from the detector's own anchors (``adapter``:
        the student's, through :meth:`pgd.distill.adapters.Records.priors`)."""
        sizes = [tuple(f.shape[-2:]) for f in feats]
        priors = adapter.priors(sizes, feats[0].device)
        if priors.boxes_or_points[0].shape[-1] != 4:
            raise ConfigError(f"FGFI needs anchor boxes; detector {self.detector!r} has anchor points")
        anchors = torch.cat(priors.boxes_or_points)
        per_img = [fgfi_mask(anchors, b, priors.num_anchors, self.iou_ratio, legacy_iou=self.legacy_iou)
                   .to(torch.float32) for b in gt_boxes(samples, anchors.device)]
        out = []
        for lvl, chunks in enumerate(zip(*[torch.split(m, priors.level_sizes) for m in per_img])):
            h, w = priors.featmap_sizes[lvl]
            out.append(torch.stack([c.reshape(h, w) for c in chunks]))
        return out

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        s_neck, t_neck = self.necks(records)
        masks = self.masks(data_samples, t_neck, records.s_adapter)
        fs = [self.adapt[i](f) for i, f in enumerate(s_neck)]
        warm = self.current_iter() < int(self.warm_iters)
        terms = fgfi_loss_terms(fs, t_neck, masks, weight=0.0 if warm else self.weight,
                                zero_without_mask=self.zero_without_gt)
        self.count_forward()
        return terms
