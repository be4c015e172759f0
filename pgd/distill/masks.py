"""Teacher predictions + GT boxes -> the PGD masks of every image and level (spec section 3).

Per image: q = max over anchors of p^(1-xi) IoU^xi (section 2), the chosen foreground strategy
(section 6; PGW by default) gives the importance I, the cls mask is I normalised per level,
the reg mask is the raw I (its non-zero set S is the loss's support), the background mask is
"inside no box" normalised per level. :func:`pgd_masks` computes them for the whole batch at
once (:func:`pgd.core.masks.batch_masks`, GT padded per image); :func:`pgd_masks_per_image`
is the reference loop over images (same numbers, kept for the tests and the benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgd.core import (
    background_mask,
    box_iou_pairs,
    foreground_weights,
    inside_mask,
    level_normalize,
    max_over_anchors,
    quality_score,
)
from pgd.core.masks import batch_masks, pad_gt


@dataclass
class Masks:
    """Per FPN level, each [N, H, W]; ``flat`` holds the same masks as [N, A] with the
    levels concatenated (what the level-concatenated losses read), when available."""

    fg_cls: list[torch.Tensor]  # normalised cls foreground M^cls
    bg: list[torch.Tensor]  # normalised background B
    reg: list[torch.Tensor]  # raw reg importance I^reg
    quality_cls: list[torch.Tensor]  # max over GT of 1[inside] q (Eq. 1, xi_cls), for figures
    imp_cls: list[torch.Tensor]  # raw cls importance I^cls (before normalisation), for figures
    flat: dict | None = None


def _split(flat: torch.Tensor, sizes, shapes) -> list[torch.Tensor]:
    return [t.reshape(h, w) for t, (h, w) in zip(torch.split(flat, sizes), shapes)]


def image_masks(probs, boxes, priors, gt_boxes, gt_labels, cfg: dict):
    """Masks of one image, each flat [A] over the levels (the per-image reference)."""
    A = priors.centres.shape[0]
    device = priors.centres.device
    if gt_boxes.numel() == 0:
        zeros = torch.zeros(A, device=device)
        bg = level_normalize(torch.ones(A, device=device), priors.level_sizes)
        return zeros, bg, zeros, zeros, zeros
    p = probs[:, gt_labels.long()]  # [A*na, G] probability of each GT's class
    iou = box_iou_pairs(boxes, gt_boxes)  # [A*na, G]
    params = dict(cfg.get("strategy_params") or {})
    out = {}
    for branch in ("cls", "reg"):
        q = max_over_anchors(quality_score(p, iou, cfg[f"xi_{branch}"]), priors.num_anchors)
        out[branch] = foreground_weights(
            cfg["strategy"],
            quality=q,
            points=priors.centres,
            gt_boxes=gt_boxes,
            k=int(cfg[f"k_{branch}"]),
            topk_scope=cfg["topk_scope"],
            **params,
        )
        if branch == "cls":  # Eq. 1 with its indicator, for figures
            out["q"] = (q * inside_mask(priors.centres, gt_boxes).to(q.dtype)).max(dim=1).values
    fg_cls = level_normalize(out["cls"], priors.level_sizes)
    bg = level_normalize(background_mask(priors.centres, gt_boxes), priors.level_sizes)
    return fg_cls, bg, out["reg"], out["q"], out["cls"]


def _priors(adapter, featmap_sizes, device):
    """The adapter's priors, cached per (feature map sizes, device): they depend on nothing
    else, and a training run sees few distinct padded input shapes."""
    cache = adapter.__dict__.setdefault("_pgd_priors_cache", {})
    key = (tuple(featmap_sizes), str(device))
    if key not in cache:
        if len(cache) >= 16:
            cache.clear()
        cache[key] = adapter.priors(featmap_sizes, device)
    return cache[key]


def _levels(flat: dict, priors) -> Masks:
    N = next(iter(flat.values())).shape[0]
    per_level = {
        k: [t.reshape(N, h, w) for t, (h, w) in zip(torch.split(v, priors.level_sizes, dim=1),
                                                    priors.featmap_sizes)]
        for k, v in flat.items()
    }
    return Masks(**per_level, flat=flat)


@torch.no_grad()
def pgd_masks(adapter, head_outs, gt_boxes_list, gt_labels_list, cfg: dict) -> Masks:
    """Masks of a batch from the teacher's head outputs, all images at once."""
    featmap_sizes = [tuple(s.shape[-2:]) for s in head_outs[0]]
    device = head_outs[0][0].device
    priors = _priors(adapter, featmap_sizes, device)
    probs, boxes = adapter.predictions(head_outs, priors)
    gt_b, gt_l, gt_v = pad_gt(gt_boxes_list, gt_labels_list, device)
    flat = batch_masks(
        probs, boxes, priors.centres, priors.level_sizes, priors.num_anchors, gt_b, gt_l, gt_v,
        strategy=cfg["strategy"], xi_cls=cfg["xi_cls"], xi_reg=cfg["xi_reg"],
        k_cls=None if cfg.get("k_cls") is None else int(cfg["k_cls"]),
        k_reg=None if cfg.get("k_reg") is None else int(cfg["k_reg"]),
        topk_scope=cfg["topk_scope"], **dict(cfg.get("strategy_params") or {}),
    )
    return _levels(flat, priors)


@torch.no_grad()
def pgd_masks_per_image(adapter, head_outs, gt_boxes_list, gt_labels_list, cfg: dict) -> Masks:
    """The reference: :func:`image_masks` looped over the images (same numbers as
    :func:`pgd_masks`)."""
    featmap_sizes = [tuple(s.shape[-2:]) for s in head_outs[0]]
    device = head_outs[0][0].device
    priors = adapter.priors(featmap_sizes, device)
    probs, boxes = adapter.predictions(head_outs, priors)
    per_image = [
        image_masks(probs[n].float(), boxes[n].float(), priors, gt_boxes_list[n].to(device).float(),
                    gt_labels_list[n].to(device), cfg)
        for n in range(probs.shape[0])
    ]
    levels = []
    for i in range(5):
        maps = [_split(m[i], priors.level_sizes, priors.featmap_sizes) for m in per_image]
        levels.append([torch.stack([img[l] for img in maps]) for l in range(len(featmap_sizes))])
    return Masks(fg_cls=levels[0], bg=levels[1], reg=levels[2], quality_cls=levels[3], imp_cls=levels[4])
