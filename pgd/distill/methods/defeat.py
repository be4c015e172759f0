"""DeFeat (Guo et al., CVPR 2021) on the FPN outputs through a 3x3 adapt conv, GT boxes
assigned to one level; the math is :func:`pgd.core.baselines.defeat_loss_terms`."""

from __future__ import annotations

import torch

from pgd.core.baselines import box_cells, defeat_loss_terms, fpn_level_by_scale
from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD, gt_boxes


@register_method("defeat")
class DeFeat(NeckKD):
    """Terms ``fg``, ``bg``."""

    ADAPT = ("adapt",)

    def __init__(self, ctx: MethodContext, *, w_fg: float, w_bg: float, finest_scale: float):
        super().__init__(ctx)
        self.w_fg, self.w_bg, self.finest_scale = w_fg, w_bg, finest_scale
        self.adapt = self.adapt_convs(3)

    @torch.no_grad()
    def masks(self, samples, feats, strides) -> list[torch.Tensor]:
        """Per level ``[N, H, W]`` binary fg: the cells of the boxes assigned to that level
        (box / the level's stride ``(sx, sy)``, as DeFeat's code maps them)."""
        boxes = gt_boxes(samples, feats[0].device)
        levels = [fpn_level_by_scale(b, self.num_levels, self.finest_scale) for b in boxes]
        out = []
        for lvl, f in enumerate(feats):
            H, W = f.shape[-2:]
            sw, sh = strides[lvl]
            scale = f.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh], dtype=torch.float32)
            out.append(torch.stack([
                box_cells(b[lv == lvl] * scale, H, W).any(dim=0).to(torch.float32)
                if b.shape[0] else torch.zeros(H, W, device=f.device)
                for b, lv in zip(boxes, levels)
            ]))
        return out

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        s_neck, t_neck = self.necks(records)
        masks = self.masks(data_samples, t_neck, records.strides("student"))
        fs = [self.adapt[i](f) for i, f in enumerate(s_neck)]
        return defeat_loss_terms(fs, t_neck, masks, w_fg=self.w_fg, w_bg=self.w_bg)

    def fg_bg_masks(self, records, data_samples):
        fg = self.masks(data_samples, records.teacher.neck, records.strides("student"))
        return fg, [1 - m for m in fg]
