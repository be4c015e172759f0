"""The PGD method as one pure-torch composition (spec sections 2-5): masks, then losses.

Everything PGD does once the adapters have recorded the teacher's predictions lives here, so
the method is one package (``pgd/core``) and the mmdet side (``pgd.distill.methods.pgd``)
only hands over what it recorded:

1. **Masks** (:func:`batch_pgd_masks`, reference :func:`per_image_pgd_masks`): from the
   teacher's class probabilities ``p`` ``[N, A*na, C]``, decoded boxes ``[N, A*na, 4]``,
   the priors and the GT boxes, per image ``q = max_anchors p^(1-xi) IoU^xi`` (Eq. 1),
   the foreground strategy's importance ``I`` (Eq. 2-3 for PGW), ``M^cls = I^cls``
   normalised per level (Eq. 4), the raw ``I^reg`` and ``B = [inside no box]`` normalised per
   level. No mask mixes images of a batch.
2. **Losses** (:func:`pgd_feature_losses`, reference :func:`pgd_feature_losses_per_level`):
   per distilled branch, ``L_cls = sum_l w_l (alpha fea_fg + beta fea_bg) + delta att``
   (Eq. 5, 6, 8; the cls and neck branches) or ``L_reg = gamma fea + delta att`` (Eq. 9), the
   student's maps passed through a 1x1 ``align`` conv (:func:`make_align`) when its channel
   count differs from the teacher's.

The parameters are two frozen dataclasses (:class:`PGDMaskParams`, :class:`PGDLossParams`)
whose defaults come from :mod:`pgd.config.defaults`; the per-detector values (alpha, tau, K)
are resolved by the config layer and passed in explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from pgd.config import defaults as D
from pgd.config.names import BRANCHES

from .losses import pgd_cls_loss_levels, pgd_cls_loss_terms, pgd_reg_loss_levels, pgd_reg_loss_terms
from .masks import batch_masks, pad_gt
from .pgw import background_mask, inside_mask, level_normalize
from .quality import box_iou_pairs, max_over_anchors, quality_score
from .strategies import foreground_weights

__all__ = [
    "Masks",
    "PGDLossParams",
    "PGDMaskParams",
    "Priors",
    "batch_pgd_masks",
    "image_masks",
    "make_align",
    "per_image_pgd_masks",
    "pgd_feature_losses",
    "pgd_feature_losses_per_level",
]


@dataclass
class Priors:
    """Priors of one batch input shape, levels concatenated P3..P7 (what the adapters give)."""

    boxes_or_points: list[torch.Tensor]  # per level: [H*W*na, 4] anchors or [H*W, 2] points
    centres: torch.Tensor  # [A, 2] one centre per location (x, y)
    level_sizes: list[int]  # H*W per level
    featmap_sizes: list[tuple[int, int]]
    num_anchors: int  # priors per location


@dataclass(frozen=True)
class PGDMaskParams:
    """What the masks depend on (spec sections 2, 3, 6). ``k_*``: top-K of each mask (the
    per-detector K, resolved by the config layer; None only for strategies without K)."""

    strategy: str = "pgw"
    xi_cls: float = D.XI_CLS
    xi_reg: float = D.XI_REG
    k_cls: int | None = None
    k_reg: int | None = None
    topk_scope: str = "inside"
    box_gauss_sigma: float = D.BOX_GAUSS_SIGMA
    centre_ratio: float = D.CENTRE_RATIO
    kde_bandwidth: float | None = None

    @property
    def strategy_params(self) -> dict:
        return dict(box_gauss_sigma=self.box_gauss_sigma, centre_ratio=self.centre_ratio,
                    kde_bandwidth=self.kde_bandwidth)

    @classmethod
    def from_mapping(cls, values: Mapping) -> PGDMaskParams:
        """From a flat mapping that may hold other keys too (an analysis' strategy settings, a
        dumped distill section with its ``strategy_params`` sub-dict): the edge conversion."""
        flat = {**dict(values), **dict(values.get("strategy_params") or {})}
        return cls(**{f.name: flat[f.name] for f in fields(cls) if flat.get(f.name) is not None})


@dataclass(frozen=True)
class PGDLossParams:
    """The loss weights (spec section 5): ``alpha``/``beta`` fg/bg feature weights, ``gamma``
    the reg feature weight, ``delta`` the attention weight, ``tau`` the attention temperature,
    one weight per level (P3..P7) and the distilled branches (paper Table 7)."""

    alpha: float
    beta: float
    gamma: float
    tau: float
    delta: float = D.DELTA
    level_weights: tuple[float, ...] = D.LEVEL_WEIGHTS
    branches: tuple[str, ...] = ("cls", "reg")

    def __post_init__(self):
        object.__setattr__(self, "level_weights", tuple(float(w) for w in self.level_weights))
        object.__setattr__(self, "branches", tuple(self.branches))
        bad = [b for b in self.branches if b not in BRANCHES]
        if bad or not self.branches:
            from pgd.errors import ConfigError

            raise ConfigError(f"branches {list(self.branches)}: must be a non-empty subset of {list(BRANCHES)}")


@dataclass
class Masks:
    """Per FPN level, each [N, H, W]; ``flat`` holds the same masks as [N, A] with the
    levels concatenated (what the level-concatenated losses read), when available."""

    fg_cls: list[torch.Tensor]  # normalised cls foreground M^cls
    bg: list[torch.Tensor]  # normalised background B
    reg: list[torch.Tensor]  # raw reg importance I^reg
    quality_cls: list[torch.Tensor]  # max over GT of 1[inside] q (Eq. 1, xi_cls), for figures
    imp_cls: list[torch.Tensor]  # raw cls importance I^cls (before normalisation), for figures
    flat: dict | None = field(default=None)
    #: [N, A, G] bool, location a strictly inside GT box g of its image (GT padded per image,
    #: :func:`pgd.core.masks.pad_gt`), and ``gt_valid`` [N, G] the real boxes; batched masks only
    inside: torch.Tensor | None = field(default=None)
    gt_valid: torch.Tensor | None = field(default=None)


# ----------------------------------------------------------------------------- masks
def image_masks(probs, boxes, priors, gt_boxes, gt_labels, params: PGDMaskParams):
    """Masks of one image, each flat [A] over the levels (the per-image reference):
    ``(M^cls, B, I^reg, quality, I^cls)``."""
    A = priors.centres.shape[0]
    device = priors.centres.device
    if gt_boxes.numel() == 0:
        zeros = torch.zeros(A, device=device)
        bg = level_normalize(torch.ones(A, device=device), priors.level_sizes)
        return zeros, bg, zeros, zeros, zeros
    p = probs[:, gt_labels.long()]  # [A*na, G] probability of each GT's class
    iou = box_iou_pairs(boxes, gt_boxes)  # [A*na, G]
    out = {}
    for branch in ("cls", "reg"):
        k = getattr(params, f"k_{branch}")
        q = max_over_anchors(quality_score(p, iou, getattr(params, f"xi_{branch}")), priors.num_anchors)
        out[branch] = foreground_weights(
            params.strategy, quality=q, points=priors.centres, gt_boxes=gt_boxes,
            k=None if k is None else int(k), topk_scope=params.topk_scope, **params.strategy_params,
        )
        if branch == "cls":  # Eq. 1 with its indicator, for figures
            out["q"] = (q * inside_mask(priors.centres, gt_boxes).to(q.dtype)).max(dim=1).values
    fg_cls = level_normalize(out["cls"], priors.level_sizes)
    bg = level_normalize(background_mask(priors.centres, gt_boxes), priors.level_sizes)
    return fg_cls, bg, out["reg"], out["q"], out["cls"]


def _levels(flat: dict, priors, **extra) -> Masks:
    N = next(iter(flat.values())).shape[0]
    per_level = {
        k: [t.reshape(N, h, w) for t, (h, w) in zip(torch.split(v, priors.level_sizes, dim=1), priors.featmap_sizes)]
        for k, v in flat.items()
    }
    return Masks(**per_level, flat=flat, **extra)


@torch.no_grad()
def batch_pgd_masks(probs: torch.Tensor, boxes: torch.Tensor, priors, gt_boxes: Sequence[torch.Tensor],
                    gt_labels: Sequence[torch.Tensor], params: PGDMaskParams) -> Masks:
    """The masks of a batch, all images at once (:func:`pgd.core.masks.batch_masks`, GT padded
    per image); ``priors`` as :class:`Priors` (``centres``, ``level_sizes``,
    ``featmap_sizes``, ``num_anchors``)."""
    gt_b, gt_l, gt_v = pad_gt(gt_boxes, gt_labels, probs.device)
    flat = batch_masks(
        probs, boxes, priors.centres, priors.level_sizes, priors.num_anchors, gt_b, gt_l, gt_v,
        strategy=params.strategy, xi_cls=params.xi_cls, xi_reg=params.xi_reg,
        k_cls=None if params.k_cls is None else int(params.k_cls),
        k_reg=None if params.k_reg is None else int(params.k_reg),
        topk_scope=params.topk_scope, with_inside=True, **params.strategy_params,
    )
    inside = flat.pop("inside")
    return _levels(flat, priors, inside=inside, gt_valid=gt_v)


@torch.no_grad()
def per_image_pgd_masks(probs: torch.Tensor, boxes: torch.Tensor, priors, gt_boxes: Sequence[torch.Tensor],
                        gt_labels: Sequence[torch.Tensor], params: PGDMaskParams) -> Masks:
    """The reference: :func:`image_masks` looped over the images (same numbers as
    :func:`batch_pgd_masks`); no ``flat`` form."""
    device = priors.centres.device
    per_image = [
        image_masks(probs[n].float(), boxes[n].float(), priors, gt_boxes[n].to(device).float(),
                    gt_labels[n].to(device), params)
        for n in range(probs.shape[0])
    ]
    levels = []
    for i in range(5):
        maps = [[t.reshape(h, w) for t, (h, w) in zip(torch.split(m[i], priors.level_sizes), priors.featmap_sizes)]
                for m in per_image]
        levels.append([torch.stack([img[lvl] for img in maps]) for lvl in range(len(priors.featmap_sizes))])
    return Masks(fg_cls=levels[0], bg=levels[1], reg=levels[2], quality_cls=levels[3], imp_cls=levels[4])


# ----------------------------------------------------------------------------- losses
def make_align(branches: Sequence[str], student_channels: Mapping[str, int], teacher_channels: Mapping[str, int],
               num_levels: int) -> nn.ModuleDict:
    """1x1 student -> teacher convs, ``"<branch>_<level>"``, for the branches whose channel
    counts differ (they train with the student)."""
    align = nn.ModuleDict()
    for branch in branches:
        cs, ct = int(student_channels[branch]), int(teacher_channels[branch])
        if cs != ct:
            for lvl in range(num_levels):
                align[f"{branch}_{lvl}"] = nn.Conv2d(cs, ct, 1)
    return align


def _maps(branch, s_maps, t_maps, masks: Masks, align):
    s, t = list(s_maps[branch]), list(t_maps[branch])
    if len(s) != len(t) or len(s) != len(masks.bg):
        raise RuntimeError(
            f"{branch}: captured {len(s)} student and {len(t)} teacher levels for {len(masks.bg)} "
            "mask levels; the two detectors must share FPN strides"
        )
    align = align if align is not None else {}
    return [align[f"{branch}_{lvl}"](f) if f"{branch}_{lvl}" in align else f for lvl, f in enumerate(s)], t


def pgd_feature_losses(s_maps: Mapping[str, list], t_maps: Mapping[str, list], masks: Masks, params: PGDLossParams,
                       align=None) -> dict[str, torch.Tensor]:
    """``{"<branch>_fea", "<branch>_att"}`` summed over the levels, each branch computed on its
    levels concatenated (``pgd.core.losses.pgd_*_loss_levels``); needs ``masks.flat``
    (:func:`batch_pgd_masks`), else falls back to :func:`pgd_feature_losses_per_level`.
    ``s_maps`` / ``t_maps``: branch -> list over levels of ``[N, C, H, W]``."""
    if masks.flat is None:
        return pgd_feature_losses_per_level(s_maps, t_maps, masks, params, align)
    p = params
    losses: dict[str, torch.Tensor] = {}
    for branch in p.branches:
        fs, ft = _maps(branch, s_maps, t_maps, masks, align)
        if branch == "reg":
            terms = pgd_reg_loss_levels(fs, ft, masks.flat["reg"], p.gamma, p.delta, p.tau)
        else:  # cls and neck both use the cls masks
            terms = pgd_cls_loss_levels(fs, ft, masks.flat["fg_cls"], masks.flat["bg"], p.alpha, p.beta, p.delta,
                                        p.tau, list(p.level_weights))
        losses.update({f"{branch}_{term}": v for term, v in terms.items()})
    return losses


def pgd_feature_losses_per_level(s_maps, t_maps, masks: Masks, params: PGDLossParams,
                                 align=None) -> dict[str, torch.Tensor]:
    """The per-level reference of :func:`pgd_feature_losses` (same numbers to float rounding)."""
    p = params
    losses: dict[str, torch.Tensor] = {}
    for branch in p.branches:
        fs_levels, ft_levels = _maps(branch, s_maps, t_maps, masks, align)
        for lvl, (fs, ft) in enumerate(zip(fs_levels, ft_levels)):
            if branch == "reg":
                terms = pgd_reg_loss_terms(fs, ft, masks.reg[lvl], p.gamma, p.delta, p.tau)
            else:
                terms = pgd_cls_loss_terms(fs, ft, masks.fg_cls[lvl], masks.bg[lvl], p.alpha, p.beta, p.delta, p.tau,
                                           level_weight=p.level_weights[lvl])
            for term, value in terms.items():
                name = f"{branch}_{term}"
                losses[name] = losses[name] + value if name in losses else value
    return losses
