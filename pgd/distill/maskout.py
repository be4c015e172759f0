"""Mask-out of a dense detector's own top-quality prior positions before NMS (paper Fig. 3).

For a batch, the head runs once; for each setting the chosen positions' class logits are set
to -inf in the head's outputs (every anchor and class of the location, so their sigmoid
probability is exactly 0 and the score threshold drops them) and the head's own
``predict_by_feat`` (score threshold, top-k, NMS, rescale) runs on the edited outputs. This
is the same call ``bbox_head.predict`` makes, for all five detectors (ATSS and FCOS with
centerness, DDOD with IoU, AutoAssign with objectness score factors, GFL without).
Which positions: :func:`pgd.core.maskout_positions`; quality: paper Eq. 1 with the
detector's own probabilities and decoded boxes (:mod:`pgd.distill.adapters`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgd.core import box_iou_pairs, inside_mask, maskout_positions, max_over_anchors, quality_score
from pgd.distill.adapters import Priors, make_adapter


@dataclass
class ImageQuality:
    """One image: location quality per GT box and the in-box indicator, both ``[A, G]``."""

    quality: torch.Tensor
    inside: torch.Tensor


class HeadMaskOut:
    """Quality of a detector's positions and predictions with positions removed."""

    def __init__(self, detector_name: str, model, *, xi: float):
        self.model = model
        self.head = model.bbox_head
        self.adapter = make_adapter(detector_name, model)
        self.xi = float(xi)

    def close(self) -> None:
        self.adapter.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor):
        """The head's raw outputs and the priors of this input shape."""
        outs = tuple(self.head(self.model.extract_feat(inputs)))
        priors = self.adapter.priors([tuple(s.shape[-2:]) for s in outs[0]], inputs.device)
        return outs, priors

    @torch.no_grad()
    def image_quality(self, outs, priors: Priors, gt_boxes_list, gt_labels_list) -> list[ImageQuality]:
        """Per image, ``q(a, b)`` (Eq. 1, max over the location's anchors) for every GT box
        (input-image coordinates, x1y1x2y2) and whether the location's centre is inside it."""
        probs, boxes = self.adapter.predictions(outs, priors)
        out = []
        for n, (gb, gl) in enumerate(zip(gt_boxes_list, gt_labels_list)):
            gb = gb.to(probs.device).float().reshape(-1, 4)
            if gb.shape[0] == 0:
                A = priors.centres.shape[0]
                empty = torch.zeros(A, 0, device=probs.device)
                out.append(ImageQuality(empty, empty.bool()))
                continue
            p = probs[n].float()[:, gl.to(probs.device).long()]
            iou = box_iou_pairs(boxes[n].float(), gb)
            q = max_over_anchors(quality_score(p, iou, self.xi), priors.num_anchors)
            out.append(ImageQuality(q, inside_mask(priors.centres, gb)))
        return out

    @staticmethod
    def drop_masks(qualities: list[ImageQuality], percent: float, mode: str,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [maskout_positions(iq.quality, iq.inside, percent, mode=mode, generator=generator)
                for iq in qualities]

    def apply(self, outs, drops: list[torch.Tensor], priors: Priors):
        """Copy of ``outs`` whose class logits are -inf at the dropped locations."""
        cls_scores = []
        starts = [0]
        for size in priors.level_sizes:
            starts.append(starts[-1] + size)
        for lvl, s in enumerate(outs[0]):
            h, w = priors.featmap_sizes[lvl]
            mask = torch.stack([d[starts[lvl]:starts[lvl + 1]].reshape(h, w) for d in drops])
            cls_scores.append(s.masked_fill(mask[:, None].to(s.device), float("-inf")))
        return (cls_scores, *outs[1:])

    @torch.no_grad()
    def predict(self, outs, batch_img_metas: list[dict]):
        """The head's own post-processing (``predict_by_feat``, rescaled to the original
        image) of (possibly edited) outputs: a list of ``InstanceData``."""
        return self.head.predict_by_feat(*outs, batch_img_metas=batch_img_metas, rescale=True)
