"""Per-box support of a foreground mask: how many positions inside each GT box get weight.

For a foreground weight map ``M`` over positions ``a`` (all FPN levels concatenated, ``M(a) >=
0``) with position centres ``c(a)`` and GT boxes ``b``::

    n_b = sum_a 1[c(a) strictly inside b] * 1[M(a) > 0]

A box with ``n_b = 0`` gets **no foreground weight at all**: it is invisible to the
distillation loss (a tiny box between prior centres, a box whose top-K positions all fell
outside it under ``topk_scope: all``, a box no mask rule selected). Every foreground strategy
of PGD (and the GT-box masks of FGD / DeFeat) gives weight only strictly inside a box, so the
count is exact for a box that overlaps no other box. Where boxes overlap, ``M`` is a max over
boxes and a position of the overlap counts for each of them: ``n_b`` is then an upper bound
and a zero is still exact (a box with no weighted position inside it got none).

Pure torch; used by ``pgd.distill.health`` for the per-epoch mask-health metrics
(docs/health.md).
"""

from __future__ import annotations

import torch

from .pgw import inside_mask

__all__ = ["box_mask_support", "batch_box_mask_support"]


def box_mask_support(weights: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """``n_b`` ``[G]`` (long): positions strictly inside each GT box with ``weights > 0``.

    Args:
        weights: ``[A]`` foreground weights of one image (levels concatenated).
        points: ``[A, 2]`` position centres ``(x, y)``, same order as ``weights``.
        gt_boxes: ``[G, 4]`` ``(x1, y1, x2, y2)``; ``G = 0`` gives an empty result.
    """
    if weights.dim() != 1 or weights.shape[0] != points.shape[0]:
        raise ValueError(f"weights {tuple(weights.shape)} must be [A] with A = points' {points.shape[0]} rows")
    if gt_boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    inside = inside_mask(points, gt_boxes)  # [A, G]
    return (inside & (weights > 0)[:, None]).sum(dim=0)


def batch_box_mask_support(weights: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """:func:`box_mask_support` of a whole batch from its inside test: ``n_b`` ``[N, G]`` (long).

    ``weights`` ``[N, A]``, ``inside`` ``[N, A, G]`` bool (position ``a`` strictly inside box
    ``g`` of image ``n``, GT padded per image as in :func:`pgd.core.masks.pad_gt`: a padding box
    contains no position, so its count is 0).
    """
    if weights.dim() != 2 or inside.dim() != 3 or tuple(inside.shape[:2]) != tuple(weights.shape):
        raise ValueError(f"weights {tuple(weights.shape)} must be [N, A] and inside {tuple(inside.shape)} [N, A, G]")
    return (inside & (weights > 0).unsqueeze(-1)).sum(dim=1)
