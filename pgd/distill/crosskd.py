"""CrossKD's head plumbing on mmdet 3.3 dense heads (GFL, ATSS, FCOS).

CrossKD (jbwang1997/CrossKD, ``mmdet/models/detectors/crosskd_{gfl,atss,fcos}.py``) takes the
student's head features after tower layer ``reused_head_idx`` (1-based: the output of
``cls_convs[idx - 1]`` / ``reg_convs[idx - 1]``; ``idx = 0``: the FPN output itself), gives
them the teacher's per-channel statistics (:func:`pgd.core.crosskd.align_scale`), applies a
ReLU (``idx > 0``) and runs the **teacher's** remaining layers on them: ``cls_convs[idx:]`` /
``reg_convs[idx:]`` and the teacher's predictors with its own ``Scale`` of the level. The
teacher's weights are frozen; gradients flow through them into the student. The loss math is
:mod:`pgd.core.crosskd`; this module only knows the heads:

=========  ==========================  ======================================================
head       predictors                  box output
=========  ==========================  ======================================================
GFLHead    ``gfl_cls``, ``gfl_reg``    ``scale(gfl_reg(reg)).float()``: 4 (reg_max + 1) logits
ATSSHead   ``atss_cls``, ``atss_reg``  ``scale(atss_reg(reg)).float()`` deltas;
           ``atss_centerness``         centerness from the reg branch
FCOSHead   ``conv_cls``, ``conv_reg``  ``scale(conv_reg(reg)).float()`` then ``exp`` (or
           ``conv_centerness``         ``clamp(min=0) * stride`` in eval with ``norm_on_bbox``);
                                       centerness from reg or cls (``centerness_on_reg``)
=========  ==========================  ======================================================

:func:`student_targets` re-runs the student head's own target assignment (the same call
CrossKD's ``loss_by_feat`` makes) for the KD normalisers and weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pgd.errors import ConfigError

#: mmdet head class -> (cls predictor, reg predictor, centerness predictor or None)
HEADS: dict[str, tuple[str, str, str | None]] = {
    "GFLHead": ("gfl_cls", "gfl_reg", None),
    "ATSSHead": ("atss_cls", "atss_reg", "atss_centerness"),
    "FCOSHead": ("conv_cls", "conv_reg", "conv_centerness"),
}


def check_head(head, reused_head_idx: int, side: str) -> None:
    """ConfigError unless ``head`` is a supported head with at least ``reused_head_idx``
    tower layers per branch."""
    name = type(head).__name__
    if name not in HEADS:
        raise ConfigError(f"CrossKD supports the heads {', '.join(HEADS)}; the {side} has {name}")
    n = min(len(head.cls_convs), len(head.reg_convs))
    if not 0 <= int(reused_head_idx) <= n:
        raise ConfigError(
            f"distill.reused_head_idx={reused_head_idx} but the {side}'s {name} has {n} "
            f"tower layers per branch; choose 0..{n} (0: the FPN output, {n}: only the predictors)"
        )


def reuse_teacher_head(head, cls_feat: torch.Tensor, reg_feat: torch.Tensor, level: int,
                       reused_head_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(cls_score, bbox_pred, centerness or None)`` of the teacher ``head`` on one level,
    from the (already aligned) student features entering its tower at ``reused_head_idx``."""
    cls_name, reg_name, ctr_name = HEADS[type(head).__name__]
    if reused_head_idx != 0:
        cls_feat, reg_feat = F.relu(cls_feat), F.relu(reg_feat)
    for i in range(int(reused_head_idx), len(head.cls_convs)):
        cls_feat = head.cls_convs[i](cls_feat)
    for i in range(int(reused_head_idx), len(head.reg_convs)):
        reg_feat = head.reg_convs[i](reg_feat)
    cls_score = getattr(head, cls_name)(cls_feat)
    bbox_pred = head.scales[level](getattr(head, reg_name)(reg_feat)).float()
    centerness = None
    if type(head).__name__ == "ATSSHead":
        centerness = head.atss_centerness(reg_feat)
    elif type(head).__name__ == "FCOSHead":
        centerness = getattr(head, ctr_name)(reg_feat if head.centerness_on_reg else cls_feat)
        if head.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not head.training:
                bbox_pred = bbox_pred * head.strides[level]
        else:
            bbox_pred = bbox_pred.exp()
    return cls_score, bbox_pred, centerness


def flatten_levels(maps, width: int) -> torch.Tensor:
    """``[N, width * a, H, W]`` per level -> rows ``[sum_l N H W a, width]`` (level-major,
    then image, location, anchor: the order of mmdet's per-level targets)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(-1, width) for m in maps])


@torch.no_grad()
def student_targets(head, featmap_sizes, samples, device) -> dict:
    """The student head's own assignment for this batch, as CrossKD's ``loss_by_feat`` gets it.

    Anchor heads (GFL, ATSS): ``anchors`` ``[M, 4]``, ``labels`` ``[M]``, ``label_weights``
    ``[M]`` and ``avg_factor`` (positives, averaged over ranks by mmdet's ``reduce_mean``).
    FCOS: ``points`` ``[M, 2]`` and ``denorm`` = ``max(reduce_mean(sum of the positives'
    centerness targets), 1e-6)``. Rows in :func:`flatten_levels` order.
    """
    from mmdet.models.utils import unpack_gt_instances
    from mmdet.utils import reduce_mean

    gts, ignores, metas = unpack_gt_instances(samples)
    sizes = [tuple(s) for s in featmap_sizes]
    if type(head).__name__ == "FCOSHead":
        points = head.prior_generator.grid_priors(sizes, dtype=torch.float32, device=device)
        labels, bbox_targets = head.get_targets(points, gts)
        labels, bbox_targets = torch.cat(labels), torch.cat(bbox_targets)
        pos = (labels >= 0) & (labels < head.num_classes)
        ctr = head.centerness_target(bbox_targets[pos])
        denorm = max(float(reduce_mean(ctr.sum().detach())), 1e-6)
        n = len(samples)
        return dict(points=torch.cat([p.repeat(n, 1) for p in points]), denorm=denorm)
    anchor_list, valid_flags = head.get_anchors(sizes, metas, device=device)
    anchors, labels, label_weights, _, _, avg_factor = head.get_targets(
        anchor_list, valid_flags, gts, metas, batch_gt_instances_ignore=ignores)
    avg_factor = float(reduce_mean(torch.tensor(avg_factor, dtype=torch.float, device=device)))
    return dict(
        anchors=torch.cat([a.reshape(-1, 4) for a in anchors]),
        labels=torch.cat([lb.reshape(-1) for lb in labels]),
        label_weights=torch.cat([w.reshape(-1) for w in label_weights]),
        avg_factor=avg_factor,
    )
