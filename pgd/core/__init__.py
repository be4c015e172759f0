"""Pure-torch math core of PGD: quality, PGW, attention, losses, foreground strategies, and
the PGD method's composition of them (:mod:`pgd.core.pgd_method`: masks, then losses).

No mmdet / mmcv / mmengine import here: the integration layer lives elsewhere.
Equations and conventions: docs/core.md (spec: pgd-method.md sections 2-6).
"""

from .attention import channel_attention, spatial_attention
from .losses import pgd_cls_loss, pgd_cls_loss_terms, pgd_reg_loss, pgd_reg_loss_terms
from .maskout import MASKOUT_MODES, maskout_counts, maskout_positions
from .pgd_method import (
    Masks,
    PGDLossParams,
    PGDMaskParams,
    Priors,
    batch_pgd_masks,
    pgd_feature_losses,
)
from .pgw import (
    PINV_RTOL,
    TOPK_SCOPES,
    background_mask,
    inside_mask,
    level_normalize,
    pgw_importance,
)
from .quality import box_iou_pairs, max_over_anchors, quality_score
from .strategies import BOX_GAUSS_SIGMA, CENTRE_RATIO, STRATEGIES, foreground_weights

__all__ = [
    "BOX_GAUSS_SIGMA",
    "CENTRE_RATIO",
    "MASKOUT_MODES",
    "Masks",
    "PGDLossParams",
    "PGDMaskParams",
    "Priors",
    "PINV_RTOL",
    "STRATEGIES",
    "TOPK_SCOPES",
    "background_mask",
    "batch_pgd_masks",
    "box_iou_pairs",
    "channel_attention",
    "foreground_weights",
    "inside_mask",
    "level_normalize",
    "maskout_counts",
    "maskout_positions",
    "max_over_anchors",
    "pgd_cls_loss",
    "pgd_cls_loss_terms",
    "pgd_feature_losses",
    "pgd_reg_loss",
    "pgd_reg_loss_terms",
    "pgw_importance",
    "quality_score",
    "spatial_attention",
]
