"""Quality score (spec section 2, paper Eq. 1), box IoU, anchor reduction, argument checks.

Everything here is pure torch. Teacher-side quantities never carry gradient: the public
functions detach their inputs and compute in float32, returning the input dtype.
"""

from __future__ import annotations

import numbers

import torch

from pgd.errors import ConfigError, check_range, unknown_name

__all__ = ["quality_score", "box_iou_pairs", "max_over_anchors"]


# ----------------------------------------------------------------------------- checks
def _check_tensor(name: str, t, ndim: int | None = None, last: int | None = None) -> None:
    """ConfigError unless ``t`` is a tensor with ``ndim`` dims and last dim ``last``."""
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ConfigError(
            f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}"
        )
    if last is not None and (t.dim() == 0 or t.shape[-1] != last):
        raise ConfigError(f"{name} must have last dimension {last}, got shape {tuple(t.shape)}")


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ConfigError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)} but {name_b} has shape "
            f"{tuple(b.shape)}; they must be equal"
        )


def _check_int(name: str, value, lo: int = 1) -> int:
    """ConfigError unless ``value`` is an integer >= lo (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
    check_range(name, value, lo=lo)
    return int(value)


def _check_choice(kind: str, value, valid) -> str:
    if not isinstance(value, str) or value not in valid:
        raise unknown_name(kind, value, valid)
    return value


def _check_weight(name: str, value) -> float:
    """A non-negative loss weight (finite)."""
    check_range(name, value, lo=0.0)
    if float(value) == float("inf"):
        raise ConfigError(f"{name}={value!r} must be finite")
    return float(value)


def _check_tau(value) -> float:
    check_range("tau", value, lo=0.0, lo_open=True)
    if float(value) == float("inf"):
        raise ConfigError(f"tau={value!r} must be finite")
    return float(value)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Detached float32 view of a teacher-side tensor."""
    return t.detach().to(torch.float32)


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype results are returned in: the input's if floating, else float32."""
    return t.dtype if t.is_floating_point() else torch.float32


# ----------------------------------------------------------------------------- public
def quality_score(cls_prob: torch.Tensor, ious: torch.Tensor, xi: float) -> torch.Tensor:
    """Quality of each prediction w.r.t. each GT box, paper Eq. 1 without the indicator.

    ``q = p ** (1 - xi) * iou ** xi`` (spec section 2). ``cls_prob`` and ``ious`` are
    ``[A, G]`` (any equal shapes work); both are clamped to ``[0, 1]`` so rounding never
    yields NaN from a fractional power. ``0 ** 0`` is 1 (torch convention), so ``xi = 0``
    gives ``p`` and ``xi = 1`` gives ``iou`` exactly. No gradient; float32 inside, returned
    in ``cls_prob``'s dtype.
    """
    _check_tensor("cls_prob", cls_prob)
    _check_tensor("ious", ious)
    _check_same_shape("cls_prob", cls_prob, "ious", ious)
    check_range("xi", xi, lo=0.0, hi=1.0)
    xi = float(xi)
    p = _f32(cls_prob).clamp(0.0, 1.0)
    iou = _f32(ious).clamp(0.0, 1.0)
    q = p.pow(1.0 - xi) * iou.pow(xi)
    return q.to(_out_dtype(cls_prob))


def box_iou_pairs(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Plain IoU of every box with every GT box: ``[A, 4] x [G, 4] -> [A, G]`` (x1y1x2y2).

    Boxes with non-positive width or height have zero area; a pair whose union is not
    positive gets IoU 0 (never NaN). No gradient; float32 inside, returned in ``boxes``'
    dtype.
    """
    _check_tensor("boxes", boxes, ndim=2, last=4)
    _check_tensor("gt", gt, ndim=2, last=4)
    b = _f32(boxes)
    g = _f32(gt)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    area_g = (g[:, 2] - g[:, 0]).clamp(min=0) * (g[:, 3] - g[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], g[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], g[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_b[:, None] + area_g[None, :] - inter
    pos = union > 0
    iou = torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), 0.0)
    return iou.clamp(0.0, 1.0).to(_out_dtype(boxes))


def max_over_anchors(q: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """Location score = max over its anchors (spec section 2): ``[A*na, ...] -> [A, ...]``.

    mmdet orders the priors of one level as ``(h, w, anchor)`` with the anchor index
    innermost, so the ``na`` consecutive rows ``a*na .. a*na+na-1`` belong to location ``a``.
    With levels concatenated, each level's row count is a multiple of ``na`` and the
    reduction stays aligned across levels.
    """
    _check_tensor("q", q)
    na = _check_int("num_anchors", num_anchors, lo=1)
    if q.dim() == 0 or q.shape[0] % na != 0:
        raise ConfigError(
            f"q's first dimension ({tuple(q.shape)}) must be a multiple of num_anchors={na}"
        )
    if na == 1:
        return q
    return q.reshape(q.shape[0] // na, na, *q.shape[1:]).amax(dim=1)
