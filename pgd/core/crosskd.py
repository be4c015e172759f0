"""CrossKD (Wang et al., "CrossKD: Cross-Head Knowledge Distillation for Object Detection",
CVPR 2024) and PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via
Pearson Correlation Coefficient", NeurIPS 2022): their math, pure torch (no mmdet / mmcv).

CrossKD feeds the student's head features after tower layer ``i`` (standardised to the
teacher's per-channel statistics, :func:`align_scale`) into the teacher's remaining head
layers; the resulting *cross-head* predictions mimic the teacher's own predictions. The head
plumbing (which layers, which predictors) lives in ``pgd.distill.crosskd``; here are the
losses of its three released recipes, as its code computes them (jbwang1997/CrossKD,
``mmdet/models/detectors/crosskd_{gfl,atss,fcos}.py`` and ``mmdet/models/losses/kd_loss.py``;
docs/baselines.md gives the file and line of every piece):

- the classification KD of every recipe is the KD quality-focal loss
  :func:`kd_quality_focal_loss` on the cross-head class logits;
- the box KD is recipe-specific: GFL, KL divergence between the per-edge box distributions
  (:func:`crosskd_gfl_terms`); ATSS, GIoU between decoded boxes plus a centerness BCE on the
  student's positives (:func:`crosskd_atss_terms`); FCOS, ``-log IoU`` between decoded boxes
  (:func:`crosskd_fcos_terms`); each weighted per location by the teacher's max class score.

Reductions follow mmdet's ``weight_reduce_loss``: ``sum / (avg_factor + eps)`` with
``eps = finfo(float32).eps`` (:data:`MMDET_EPS`). Teacher-side tensors are detached; maths in
float32, results in the cross-head predictions' dtype. Every input here is **flattened**:
``[M, ...]`` with the M rows = every (image, location, anchor) of every level, in one order
shared by all arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pgd.errors import ConfigError

from .quality import _check_tensor, _check_weight

__all__ = [
    "ALIGN_EPS",
    "IOU_EPS",
    "MMDET_EPS",
    "aligned_box_overlaps",
    "align_scale",
    "channel_standardise",
    "crosskd_atss_terms",
    "crosskd_fcos_terms",
    "crosskd_gfl_terms",
    "kd_kl_div",
    "kd_quality_focal_loss",
    "pkd_loss",
    "pkd_loss_terms",
]

#: mmdet's ``weight_reduce_loss`` divides by ``avg_factor + eps`` (eps = float32 epsilon)
MMDET_EPS = float(torch.finfo(torch.float32).eps)
#: CrossKD's ``align_scale`` and PKD's ``norm``: ``(x - mean) / (std + 1e-6)``
ALIGN_EPS = 1e-6
#: mmdet 3.3's ``bbox_overlaps`` floor of union / enclosure, ``IoULoss`` clamp, ``GIoULoss`` eps
IOU_EPS = 1e-6


# ----------------------------------------------------------------------------- helpers
def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


def _check_rows(**tensors) -> int:
    rows = {k: int(v.shape[0]) for k, v in tensors.items() if v is not None}
    for k, v in tensors.items():
        if v is not None and not isinstance(v, torch.Tensor):
            raise ConfigError(f"{k} must be a torch.Tensor, got {type(v).__name__}")
    if len(set(rows.values())) > 1:
        raise ConfigError(f"flattened inputs must share their first dimension (rows), got {rows}")
    return next(iter(rows.values()))


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ConfigError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has {tuple(b.shape)}")


def _reduce(loss: torch.Tensor, avg_factor: float) -> torch.Tensor:
    """mmdet's ``weight_reduce_loss(..., reduction='mean', avg_factor)``: sum / (avg + eps)."""
    return loss.sum() / (float(avg_factor) + MMDET_EPS)


def _reg_weights(teacher_cls: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
    """Per-row box-KD weight: the teacher's max class score, 0 where the label weight is 0."""
    w = _f32(teacher_cls.detach()).amax(dim=1).sigmoid()
    if label_weights is not None:
        w = torch.where(label_weights.reshape(-1) == 0, torch.zeros_like(w), w)
    return w


# ----------------------------------------------------------------------------- features
def channel_standardise(feat: torch.Tensor, eps: float = ALIGN_EPS):
    """``(z, mean, std)``: each channel of ``[N, C, H, W]`` standardised over (N, H, W).

    ``z = (F - mean_c) / (std_c + eps)`` with the unbiased standard deviation, as CrossKD's
    ``align_scale`` and PKD's ``norm`` (jbwang1997/CrossKD ``mmdet/models/losses/pkd_loss.py``
    L10-23). ``mean`` and ``std`` are ``[1, C, 1, 1]``.
    """
    _check_tensor("feat", feat, ndim=4)
    f = _f32(feat)
    mean = f.mean(dim=(0, 2, 3), keepdim=True)
    std = f.std(dim=(0, 2, 3), keepdim=True)
    return (f - mean) / (std + float(eps)), mean, std


def align_scale(feat_s: torch.Tensor, feat_t: torch.Tensor, eps: float = ALIGN_EPS) -> torch.Tensor:
    """CrossKD's ``align_scale``: the student map with the teacher's per-channel statistics,

        F^S' = (F^S - mean_c(F^S)) / (std_c(F^S) + eps) * std_c(F^T) + mean_c(F^T)

    over (N, H, W), unbiased std (jbwang1997/CrossKD ``crosskd_gfl.py`` L88-100). Gradients
    flow into ``F^S`` (through its statistics too); the teacher's statistics are detached.
    """
    _check_tensor("feat_t", feat_t, ndim=4)
    _check_same("feat_s", feat_s, "feat_t", feat_t)
    z, _, _ = channel_standardise(feat_s, eps)
    _, mean_t, std_t = channel_standardise(feat_t.detach(), eps)
    return (z * std_t + mean_t).to(feat_s.dtype)


def pkd_loss(feat_s: torch.Tensor, feat_t: torch.Tensor, eps: float = ALIGN_EPS) -> torch.Tensor:
    """PKD on one map: ``mean over (n, c, h, w) of (z^S - z^T)^2 / 2``, ``z`` =
    :func:`channel_standardise` of each side (``1 - r`` of the per-channel Pearson
    correlation, up to the ``eps`` and the unbiased std); CrossKD's ``pkd_loss.py`` L26-30."""
    _check_same("feat_s", feat_s, "feat_t", feat_t)
    zs, _, _ = channel_standardise(feat_s, eps)
    zt, _, _ = channel_standardise(feat_t.detach(), eps)
    return F.mse_loss(zs, zt) / 2


def pkd_loss_terms(feats_s: Sequence[torch.Tensor], feats_t: Sequence[torch.Tensor], *,
                   weight: float) -> dict[str, torch.Tensor]:
    """PKD summed over FPN levels: ``{"feat": weight * sum_levels pkd_loss(F^S, F^T)}``
    (CrossKD's configs apply ``PKDLoss(loss_weight=weight)`` to every neck level)."""
    if len(feats_s) != len(feats_t) or not feats_s:
        raise ConfigError(f"PKD needs one student and one teacher map per level, got {len(feats_s)} "
                          f"and {len(feats_t)}")
    weight = _check_weight("weight", weight)
    total = sum(pkd_loss(s, t) for s, t in zip(feats_s, feats_t))
    return {"feat": (weight * total).to(feats_s[0].dtype)}


# ----------------------------------------------------------------------------- losses
def kd_quality_focal_loss(pred: torch.Tensor, target_logits: torch.Tensor,
                          weight: torch.Tensor | None = None, *, beta: float,
                          avg_factor: float) -> torch.Tensor:
    """CrossKD's ``KDQualityFocalLoss`` (``kd_loss.py`` L44-59), rows ``[M, K]`` of logits::

        sum_{m,k} w_m * BCE(sigmoid(z_mk), p_mk) * |sigmoid(z_mk) - p_mk|^beta / (avg_factor + eps)

    with ``p = sigmoid(teacher logits)`` (detached), the BCE from logits, ``w`` the per-row
    weights (``None``: 1)."""
    _check_tensor("pred", pred, ndim=2)
    _check_same("pred", pred, "target_logits", target_logits)
    z = _f32(pred)
    p = _f32(target_logits.detach()).sigmoid()
    loss = F.binary_cross_entropy_with_logits(z, p, reduction="none") * (z.sigmoid() - p).abs().pow(float(beta))
    if weight is not None:
        loss = loss * _f32(weight.detach()).reshape(-1, 1)
    return _reduce(loss, avg_factor)


def kd_kl_div(pred: torch.Tensor, soft_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Per row ``T^2 * sum_k KL(softmax(t / T) || softmax(z / T))`` of ``[M, B]`` logits:
    mmdet's ``knowledge_distillation_kl_div_loss`` with CrossKD's ``class_reduction='sum'``
    (``kd_loss.py`` L10-41); the target detached. Returns ``[M]``."""
    _check_tensor("pred", pred, ndim=2)
    _check_same("pred", pred, "soft_logits", soft_logits)
    if not float(temp) >= 1:
        raise ConfigError(f"temp={temp!r} must be >= 1 (KnowledgeDistillationKLDivLoss asserts T >= 1)")
    T = float(temp)
    target = F.softmax(_f32(soft_logits.detach()) / T, dim=1)
    kl = F.kl_div(F.log_softmax(_f32(pred) / T, dim=1), target, reduction="none")
    return kl.sum(dim=1) * (T * T)


def aligned_box_overlaps(a: torch.Tensor, b: torch.Tensor, mode: str = "iou",
                         eps: float = IOU_EPS) -> torch.Tensor:
    """IoU or GIoU of row-aligned boxes ``[M, 4]`` (x1y1x2y2), as mmdet 3.3's
    ``bbox_overlaps(..., is_aligned=True)``: union and enclosure floored at ``eps``, areas
    unclamped, gradient to both."""
    _check_tensor("a", a, ndim=2, last=4)
    _check_same("a", a, "b", b)
    if mode not in ("iou", "giou"):
        raise ConfigError(f"mode={mode!r} must be 'iou' or 'giou'")
    a, b = _f32(a), _f32(b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = torch.clamp(area_a + area_b - overlap, min=float(eps))
    ious = overlap / union
    if mode == "iou":
        return ious
    ewh = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0)
    enclose = torch.clamp(ewh[:, 0] * ewh[:, 1], min=float(eps))
    return ious - (enclose - union) / enclose


# ----------------------------------------------------------------------------- recipes
def crosskd_gfl_terms(reused_cls: torch.Tensor, teacher_cls: torch.Tensor,
                      reused_dist: torch.Tensor, teacher_dist: torch.Tensor,
                      label_weights: torch.Tensor, avg_factor: float, *, beta: float, temp: float,
                      w_cls: float, w_reg: float) -> dict[str, torch.Tensor]:
    """CrossKD's GFL recipe (``crosskd_gfl.py`` L177-227), rows over every (image, anchor).

    ``reused_cls`` / ``teacher_cls`` ``[M, K]`` class logits, ``reused_dist`` /
    ``teacher_dist`` ``[M, 4 (n+1)]`` box-distribution logits (4 edges of ``n + 1`` bins),
    ``label_weights`` ``[M]`` and ``avg_factor`` (positives) of the student's assignment::

        cls = w_cls * KDQFL(reused_cls, teacher_cls; w = label_weights, avg_factor)
        w_m = sigmoid(max_k teacher_cls_mk) * [label_weights_m != 0]
        reg = w_reg * (sum_{m,e} w_m KL_T(dist_me) / (4 + eps)) / sum_m w_m
    """
    M = _check_rows(reused_cls=reused_cls, teacher_cls=teacher_cls, reused_dist=reused_dist,
                    teacher_dist=teacher_dist, label_weights=label_weights)
    _check_same("reused_dist", reused_dist, "teacher_dist", teacher_dist)
    if reused_dist.shape[1] % 4:
        raise ConfigError(f"box distributions must have 4 * (reg_max + 1) columns, got {reused_dist.shape[1]}")
    w_cls, w_reg = _check_weight("w_cls", w_cls), _check_weight("w_reg", w_reg)
    cls = kd_quality_focal_loss(reused_cls, teacher_cls, label_weights, beta=beta, avg_factor=avg_factor)
    w = _reg_weights(teacher_cls, label_weights)
    bins = reused_dist.shape[1] // 4
    kl = kd_kl_div(reused_dist.reshape(M * 4, bins), teacher_dist.reshape(M * 4, bins), temp)
    reg = (_reduce(w.repeat_interleave(4) * kl, 4.0)) / w.sum()
    dt = reused_cls.dtype
    return {"cls": (w_cls * cls).to(dt), "reg": (w_reg * reg).to(dt)}


def crosskd_atss_terms(reused_cls: torch.Tensor, teacher_cls: torch.Tensor,
                       reused_boxes: torch.Tensor, teacher_boxes: torch.Tensor,
                       reused_ctr: torch.Tensor, teacher_ctr: torch.Tensor,
                       label_weights: torch.Tensor, positive: torch.Tensor, avg_factor: float, *,
                       beta: float, w_cls: float, w_reg: float, w_center: float) -> dict[str, torch.Tensor]:
    """CrossKD's ATSS recipe (``crosskd_atss.py`` L207-282), rows over every (image, anchor).

    Boxes are decoded (x1y1x2y2) from each side's deltas with the anchors; ``reused_ctr`` /
    ``teacher_ctr`` ``[M]`` centerness logits; ``positive`` ``[M]`` bool, ``label_weights``
    and ``avg_factor`` of the student's assignment::

        cls    = w_cls * KDQFL(reused_cls, teacher_cls; w = label_weights, avg_factor)
        reg    = w_reg * sum_m w_m (1 - GIoU(b^r_m, b^t_m)) / (avg_factor + eps)
        center = w_center * sum_{m positive} BCE(sigmoid(c^r_m), sigmoid(c^t_m)) / (avg_factor + eps)

    with ``w_m`` the teacher's max class score (0 where the label weight is 0); ``center`` is
    0 without positives.
    """
    _check_rows(reused_cls=reused_cls, teacher_cls=teacher_cls, reused_boxes=reused_boxes,
                teacher_boxes=teacher_boxes, reused_ctr=reused_ctr, teacher_ctr=teacher_ctr,
                label_weights=label_weights, positive=positive)
    w_cls, w_reg, w_center = (_check_weight(k, v) for k, v in
                              (("w_cls", w_cls), ("w_reg", w_reg), ("w_center", w_center)))
    cls = kd_quality_focal_loss(reused_cls, teacher_cls, label_weights, beta=beta, avg_factor=avg_factor)
    w = _reg_weights(teacher_cls, label_weights)
    giou = aligned_box_overlaps(reused_boxes, teacher_boxes.detach(), "giou")
    reg = _reduce(w * (1 - giou), avg_factor)
    pos = positive.reshape(-1).bool()
    zc = _f32(reused_ctr.reshape(-1))[pos]
    pc = _f32(teacher_ctr.detach().reshape(-1))[pos].sigmoid()
    center = _reduce(F.binary_cross_entropy_with_logits(zc, pc, reduction="none"), avg_factor)
    dt = reused_cls.dtype
    return {"cls": (w_cls * cls).to(dt), "reg": (w_reg * reg).to(dt), "center": (w_center * center).to(dt)}


def crosskd_fcos_terms(reused_cls: torch.Tensor, teacher_cls: torch.Tensor,
                       reused_boxes: torch.Tensor, teacher_boxes: torch.Tensor, denorm: float, *,
                       beta: float, w_cls: float, w_reg: float) -> dict[str, torch.Tensor]:
    """CrossKD's FCOS recipe (``crosskd_fcos.py`` L286-300), rows over every (image, point).

    Boxes decoded from each side's distances with the points; ``denorm`` = the student's
    ``max(sum of the positives' centerness targets, 1e-6)``::

        cls = w_cls * KDQFL(reused_cls, teacher_cls; w = 1, denorm)
        reg = w_reg * sum_m w_m * -log(max(IoU(b^r_m, b^t_m), 1e-6)) / (denorm + eps)

    with ``w_m = sigmoid(max_k teacher_cls_mk)``.
    """
    _check_rows(reused_cls=reused_cls, teacher_cls=teacher_cls, reused_boxes=reused_boxes,
                teacher_boxes=teacher_boxes)
    w_cls, w_reg = _check_weight("w_cls", w_cls), _check_weight("w_reg", w_reg)
    cls = kd_quality_focal_loss(reused_cls, teacher_cls, None, beta=beta, avg_factor=denorm)
    w = _reg_weights(teacher_cls, None)
    iou = aligned_box_overlaps(reused_boxes, teacher_boxes.detach(), "iou").clamp(min=IOU_EPS)
    reg = _reduce(w * -iou.log(), denorm)
    dt = reused_cls.dtype
    return {"cls": (w_cls * cls).to(dt), "reg": (w_reg * reg).to(dt)}
