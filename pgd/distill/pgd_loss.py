"""The PGD distillation loss over all FPN levels and branches (spec section 5)."""

from __future__ import annotations

import torch
from torch import nn

from pgd.core import pgd_cls_loss_terms, pgd_reg_loss_terms
from pgd.core.losses import pgd_cls_loss_levels, pgd_reg_loss_levels
from pgd.distill.masks import Masks


class PGDLoss(nn.Module):
    """Sums the per-level terms into ``loss_pgd_<branch>_<fea|att>`` entries.

    ``align`` holds 1x1 convs (student -> teacher channels) per branch and level when the
    channel counts differ; they train with the student. :meth:`forward` computes each
    branch on its levels concatenated (``pgd.core.losses.pgd_*_loss_levels``) when the masks
    carry their flat ``[N, A]`` form; :meth:`forward_per_level` is the per-level reference
    (same numbers to float rounding).
    """

    def __init__(self, cfg: dict, align: nn.ModuleDict):
        super().__init__()
        self.cfg = cfg
        self.align = align

    def _student(self, branch: str, level: int, feat: torch.Tensor) -> torch.Tensor:
        key = f"{branch}_{level}"
        return self.align[key](feat) if key in self.align else feat

    def _maps(self, branch, s_feats, t_feats, masks):
        s_maps, t_maps = getattr(s_feats, branch), getattr(t_feats, branch)
        if len(s_maps) != len(t_maps) or len(s_maps) != len(masks.bg):
            raise RuntimeError(
                f"{branch}: captured {len(s_maps)} student and {len(t_maps)} teacher levels "
                f"for {len(masks.bg)} mask levels; the two detectors must share FPN strides"
            )
        return [self._student(branch, lvl, fs) for lvl, fs in enumerate(s_maps)], t_maps

    def forward(self, s_feats, t_feats, masks: Masks) -> dict[str, torch.Tensor]:
        if masks.flat is None:
            return self.forward_per_level(s_feats, t_feats, masks)
        cfg = self.cfg
        losses: dict[str, torch.Tensor] = {}
        for branch in cfg["branches"]:
            s_maps, t_maps = self._maps(branch, s_feats, t_feats, masks)
            if branch == "reg":
                terms = pgd_reg_loss_levels(s_maps, t_maps, masks.flat["reg"], cfg["gamma"], cfg["delta"], cfg["tau"])
            else:  # cls and neck both use the cls masks
                terms = pgd_cls_loss_levels(s_maps, t_maps, masks.flat["fg_cls"], masks.flat["bg"], cfg["alpha"],
                                            cfg["beta"], cfg["delta"], cfg["tau"], cfg["level_weights"])
            for term, value in terms.items():
                losses[f"loss_pgd_{branch}_{term}"] = value
        return losses

    def forward_per_level(self, s_feats, t_feats, masks: Masks) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        losses: dict[str, torch.Tensor] = {}

        def add(name, value):
            losses[name] = losses[name] + value if name in losses else value

        for branch in cfg["branches"]:
            s_maps, t_maps = self._maps(branch, s_feats, t_feats, masks)
            for lvl, (fs, ft) in enumerate(zip(s_maps, t_maps)):
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
