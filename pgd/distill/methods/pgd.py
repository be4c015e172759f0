"""PGD as a registered KD method: the adapters' records in, :mod:`pgd.core.pgd_method` out.

Everything PGD computes is the pure-torch composition of :mod:`pgd.core.pgd_method` (masks
from the teacher's quality, the per-level cls / reg losses, its parameters); this module only
reads the records (the teacher's decoded predictions and priors, both detectors' maps of the
distilled branches), owns the 1x1 ``align`` convs (state-dict keys ``kd.align.<branch>_<l>``)
and feeds PGD's per-box mask support to the mask-health accumulator.
"""

from __future__ import annotations

import torch

from pgd.core.pgd_method import (
    Masks,
    PGDLossParams,
    PGDMaskParams,
    batch_pgd_masks,
    make_align,
    per_image_pgd_masks,
    pgd_feature_losses,
    pgd_feature_losses_per_level,
)
from pgd.distill.health import MaskHealth
from pgd.distill.methods.base import KDMethod, MethodContext, register_method


@register_method("pgd")
class PGD(KDMethod):
    """Terms ``<branch>_fea``, ``<branch>_att`` per distilled branch (``neck``, ``cls``,
    ``reg``). ``reference = True``: the per-image masks and per-level losses instead (the
    same numbers, slower; tests and benchmarks)."""

    def __init__(self, ctx: MethodContext, *, masks: PGDMaskParams, losses: PGDLossParams):
        super().__init__(ctx)
        self.mask_params, self.loss_params = masks, losses
        channels = {side: {b: ctx.channels(side, b) for b in losses.branches} for side in ("student", "teacher")}
        self.align = make_align(losses.branches, channels["student"], channels["teacher"], len(losses.level_weights))
        self.mask_health = MaskHealth(losses.branches)  # docs/health.md
        self.last_masks: Masks | None = None  # the latest step's masks (diagnostics)
        self.reference = False

    @classmethod
    def from_config(cls, distill, ctx: MethodContext) -> PGD:
        d = distill
        sp = d.strategy_params
        masks = PGDMaskParams(strategy=d.strategy, xi_cls=d.xi_cls, xi_reg=d.xi_reg, k_cls=d.k_cls, k_reg=d.k_reg,
                              topk_scope=d.topk_scope, box_gauss_sigma=sp.box_gauss_sigma,
                              centre_ratio=sp.centre_ratio, kde_bandwidth=sp.kde_bandwidth)
        losses = PGDLossParams(alpha=d.alpha, beta=d.beta, gamma=d.gamma, tau=d.tau, delta=d.delta,
                               level_weights=tuple(d.level_weights), branches=tuple(d.branches))
        return cls(ctx, masks=masks, losses=losses)

    def masks(self, records, data_samples) -> Masks:
        """The batch's PGD masks from the teacher's recorded predictions."""
        probs, boxes = records.teacher_predictions()
        gts = [s.gt_instances for s in data_samples]
        fn = per_image_pgd_masks if self.reference else batch_pgd_masks
        return fn(probs, boxes, records.priors(), [g.bboxes for g in gts], [g.labels for g in gts],
                               self.mask_params)

    def losses(self, records, masks: Masks) -> dict[str, torch.Tensor]:
        branches = self.loss_params.branches
        s_maps = {b: getattr(records.student, b) for b in branches}
        t_maps = {b: getattr(records.teacher, b) for b in branches}
        fn = pgd_feature_losses_per_level if self.reference else pgd_feature_losses
        return fn(s_maps, t_maps, masks, self.loss_params, self.align)

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        masks = self.masks(records, data_samples)
        self.last_masks = masks
        if self.training:
            self.mask_health.observe_pgd(masks, records.priors(), [s.gt_instances.bboxes for s in data_samples])
        return self.losses(records, masks)

    def fg_bg_masks(self, records, data_samples):
        masks = self.last_masks if self.last_masks is not None else self.masks(records, data_samples)
        return masks.fg_cls, masks.bg
