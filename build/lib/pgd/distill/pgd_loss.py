"""The PGD distillation loss over all FPN levels and branches (spec section 5)."""

from __future__ import annotations

import torch
from torch import nn

from pgd.core import pgd_cls_loss_terms, pgd_reg_loss_terms
from pgd.distill.masks import Masks


class PGDLoss(nn.Module):
    """Sums the per-level terms into ``loss_pgd_<branch>_<fea|att>`` entries.

    ``align`` holds 1x1 convs (student -> teacher channels) per branch and level when the
    channel counts differ; they train with the student.
    """

    def __init__(self, cfg: dict, align: nn.ModuleDict):
        super().__init__()
        self.cfg = cfg
        self.align = align

    def _student(self, branch: str, level: int, feat: torch.Tensor) -> torch.Tensor:
        key = f"{branch}_{level}"
        return self.align[key](feat) if key in self.align else feat

    def forward(self, s_feats, t_feats, masks: Masks) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        losses: dict[str, torch.Tensor] = {}

        def add(name, value):
            losses[name] = losses[name] + value if name in losses else value

        for branch in cfg["branches"]:
            s_maps, t_maps = getattr(s_feats, branch), getattr(t_feats, branch)
            if len(s_maps) != len(t_maps) or len(s_maps) != len(masks.bg):
                raise RuntimeError(
                    f"{branch}: captured {len(s_maps)} student and {len(t_maps)} teacher levels "
                    f"for {len(masks.bg)} mask levels; the two detectors must share FPN strides"
                )
            for lvl, (fs, ft) in enumerate(zip(s_maps, t_maps)):
                fs = self._student(branch, lvl, fs)
                if branch == "reg":
                    terms = pgd_reg_loss_terms(fs, ft, masks.reg[lvl], cfg["gamma"], cfg["delta"], cfg["tau"])
                else:  # cls and neck both use the cls masks
                    terms = pgd_cls_loss_terms(
                        fs, ft, masks.fg_cls[lvl], masks.bg[lvl], cfg["alpha"], cfg["beta"],
                        cfg["delta"], cfg["tau"], level_weight=cfg["level_weights"][lvl],
                    )
                for term, value in terms.items():
                    add(f"loss_pgd_{branch}_{term}", value)
        return losses
