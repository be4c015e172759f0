"""PGD's masks from a detector's head outputs, through its adapter (analyses, tests, benches).

The masks themselves are :mod:`pgd.core.pgd_method` (pure torch); this is the mmdet-side
glue for callers holding a detector rather than a step's records: the adapter gives the
priors and decodes the head outputs into class probabilities and boxes. Training goes through
:class:`pgd.distill.methods.pgd.PGD` instead (the same functions).
"""

from __future__ import annotations

import torch

from pgd.core.pgd_method import (
    Masks,
    PGDMaskParams,
    batch_pgd_masks,
    image_masks,
    per_image_pgd_masks,
)

__all__ = ["Masks", "PGDMaskParams", "image_masks", "pgd_masks", "pgd_masks_per_image"]


def _inputs(adapter, head_outs, cached: bool):
    featmap_sizes = [tuple(s.shape[-2:]) for s in head_outs[0]]
    device = head_outs[0][0].device
    priors = (adapter.cached_priors if cached else adapter.priors)(featmap_sizes, device)
    probs, boxes = adapter.predictions(head_outs, priors)
    return probs, boxes, priors


@torch.no_grad()
def pgd_masks(adapter, head_outs, gt_boxes_list, gt_labels_list, params: PGDMaskParams) -> Masks:
    """Masks of a batch from the head's outputs, all images at once."""
    probs, boxes, priors = _inputs(adapter, head_outs, cached=True)
    return batch_pgd_masks(probs, boxes, priors, gt_boxes_list, gt_labels_list, params)


@torch.no_grad()
def pgd_masks_per_image(adapter, head_outs, gt_boxes_list, gt_labels_list, params: PGDMaskParams) -> Masks:
    """The reference: :func:`pgd.core.pgd_method.image_masks` looped over the images."""
    probs, boxes, priors = _inputs(adapter, head_outs, cached=False)
    return per_image_pgd_masks(probs, boxes, priors, gt_boxes_list, gt_labels_list, params)
