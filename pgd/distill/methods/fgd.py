"""FGD (Yang et al., CVPR 2022) on the FPN outputs: focal (fg / bg / attention) and global
(GcBlock) terms; the math is :func:`pgd.core.baselines.fgd_loss_terms` (docs/baselines.md)."""

from __future__ import annotations

import torch
from torch import nn

from pgd.core.baselines import GcBlock, fgd_loss_terms, fgd_masks
from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD, gt_boxes, padded_shape


@register_method("fgd")
class FGD(NeckKD):
    """Terms ``fg``, ``bg``, ``att``, ``global``."""

    ADAPT = ("align",)

    def __init__(self, ctx: MethodContext, *, temp: float, alpha: float, beta: float, gamma: float,
                 lambda_: float, padded_shape: bool, inclusive_cells: bool, clipped_area: bool):
        super().__init__(ctx)
        self.temp, self.alpha, self.beta, self.gamma, self.lambda_ = temp, alpha, beta, gamma, lambda_
        self.padded_shape, self.inclusive_cells, self.clipped_area = padded_shape, inclusive_cells, clipped_area
        # FGD aligns a narrower student with a 1x1 conv before everything else
        self.align = self.adapt_convs(1) if self.c_s != self.c_t else None
        self.gc_s = nn.ModuleList(GcBlock(self.c_t) for _ in range(self.num_levels))
        self.gc_t = nn.ModuleList(GcBlock(self.c_t) for _ in range(self.num_levels))

    def init_weights(self) -> None:
        super().init_weights()
        for block in [*self.gc_s, *self.gc_t]:
            block.reset_parameters()

    @torch.no_grad()
    def masks(self, samples, feats) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level ``[N, H, W]`` fg / bg masks (:func:`pgd.core.baselines.fgd_masks`).

        Boxes are mapped to cells as FGD's code, ``x / shape_w * W`` and ``y / shape_h * H``,
        with ``shape`` the padded batch input shape (``padded_shape``, the default; the code
        uses each image's unpadded ``img_shape``, which shrinks the boxes of padded images)."""
        if self.padded_shape:
            shapes = [padded_shape(samples)] * len(samples)
        else:
            shapes = [tuple(int(v) for v in s.metainfo["img_shape"][:2]) for s in samples]
        boxes = gt_boxes(samples, feats[0].device)
        fgs, bgs = [], []
        for f in feats:
            H, W = f.shape[-2:]
            per_img = []
            for b, (sh, sw) in zip(boxes, shapes):
                cell = torch.stack([b[:, 0] / sw * W, b[:, 1] / sh * H, b[:, 2] / sw * W, b[:, 3] / sh * H], 1)
                per_img.append(fgd_masks(cell, H, W, inclusive=self.inclusive_cells, clipped_area=self.clipped_area))
            fgs.append(torch.stack([m[0] for m in per_img]))
            bgs.append(torch.stack([m[1] for m in per_img]))
        return fgs, bgs

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        s_neck, t_neck = self.necks(records)
        fs = [self.align[i](f) for i, f in enumerate(s_neck)] if self.align is not None else s_neck
        fg, bg = self.masks(data_samples, t_neck)
        return fgd_loss_terms(fs, t_neck, fg, bg, self.gc_s, self.gc_t, temp=self.temp, alpha=self.alpha,
                              beta=self.beta, gamma=self.gamma, lambda_=self.lambda_)

    def fg_bg_masks(self, records, data_samples):
        return self.masks(data_samples, records.teacher.neck)
