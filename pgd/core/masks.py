"""The PGD masks of a whole batch at once (spec sections 2, 3, 6), pure torch.

The per-image path (``pgd.core.pgd_method.image_masks``) computes, for image ``n`` with
``G_n`` GT boxes, ``q = max_anchors p^(1-xi) IoU^xi`` (Eq. 1), the strategy's importance
``I`` (Eq. 2-3 for PGW), ``M^cls = I^cls`` normalised per level (Eq. 4), the raw ``I^reg``
and ``B = [inside no box]`` normalised per level. Here the same quantities are computed for
all ``N`` images in one pass, with the GT boxes padded to ``G = max_n G_n`` per image:

- ``p[n, a, g] = probs[n, a, label[n, g]]`` and ``IoU[n, a, g]`` as ``[N, A*na, G]``
  tensors, shared by both branches (only the exponent ``xi`` differs);
- the ``N * G`` boxes become the columns of one ``[A, N*G]`` score matrix (the priors are
  the same for every image of a batch), so the per-box top-K, Gaussian fit and
  pseudo-inverse of :mod:`pgd.core.pgw` run once for the whole batch; a box's weights are
  scattered back to its own image (``flat index = n * A + a``) with a max over boxes;
- a padding box is ``(0, 0, 0, 0)``: no position is strictly inside it, so it selects
  nothing and contributes 0 to every max (``I``, the figures' quality, the background test),
  and its quality column is 0.

The results equal the per-image path's to float rounding (they are bit-identical on the
cases the tests draw, except that exact ties in quality may be broken differently by the
top-K, as within :func:`pgd.core.pgw._topk_columns`). No Python loop over images or boxes,
no host synchronisation: every shape is known from the input shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pgd.config.defaults import BOX_GAUSS_SIGMA, CENTRE_RATIO
from pgd.config.names import STRATEGIES, TOPK_SCOPES
from pgd.errors import ConfigError, check_range

from .pgw import _inside_ag, level_normalize
from .quality import _check_choice, _check_int, _check_tensor, _f32
from .strategies import _NEEDS_K, _NEEDS_QUALITY, box_weights

__all__ = ["pad_gt", "batch_box_iou", "batch_masks"]

MASK_KEYS = ("fg_cls", "bg", "reg", "quality_cls", "imp_cls")


def pad_gt(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], device=None):
    """Per-image GT lists -> ``(boxes [N, G, 4] float32, labels [N, G] long, valid [N, G])``.

    ``G = max_n G_n`` (host-side lengths, no sync); padding boxes are ``(0, 0, 0, 0)`` with
    label 0 and ``valid`` False.
    """
    if len(boxes) != len(labels) or not len(boxes):
        raise ConfigError(f"need one box and one label tensor per image, got {len(boxes)} and {len(labels)}")
    device = device if device is not None else boxes[0].device
    for n, b in enumerate(boxes):
        if b.numel():
            _check_tensor(f"boxes[{n}]", b, ndim=2, last=4)
    lengths = [int(b.shape[0]) for b in boxes]
    out_b = torch.nn.utils.rnn.pad_sequence(
        [b.to(device=device, dtype=torch.float32).reshape(-1, 4) for b in boxes], batch_first=True)
    out_l = torch.nn.utils.rnn.pad_sequence(
        [lab.to(device=device).long().reshape(-1) for lab in labels], batch_first=True)
    G = out_b.shape[1]
    valid = torch.arange(G, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    return out_b, out_l, valid


def batch_box_iou(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """:func:`pgd.core.box_iou_pairs` per image: ``[N, A, 4] x [N, G, 4] -> [N, A, G]``.

    The same operations broadcast over ``N`` (so the same numbers):
    ``IoU = inter / (area_b + area_g - inter)``, 0 where the union is not positive.
    """
    bx1, by1, bx2, by2 = _f32(boxes).unbind(-1)  # [N, A] each
    gx1, gy1, gx2, gy2 = _f32(gt).unbind(-1)  # [N, G] each
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    area_g = (gx2 - gx1).clamp(min=0) * (gy2 - gy1).clamp(min=0)
    # the intersection's width and height, one coordinate at a time (the same operations)
    w = (torch.minimum(bx2[:, :, None], gx2[:, None, :]) - torch.maximum(bx1[:, :, None], gx1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(by2[:, :, None], gy2[:, None, :]) - torch.maximum(by1[:, :, None], gy1[:, None, :])).clamp_(min=0)
    inter = w.mul_(h)
    union = area_b[:, :, None] + area_g[:, None, :] - inter
    pos = union > 0
    iou = torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), 0.0)
    return iou.clamp(0.0, 1.0)


def _max_over_anchors(q: torch.Tensor, na: int) -> torch.Tensor:
    """``[N, A*na, G] -> [N, A, G]`` (:func:`pgd.core.max_over_anchors` per image)."""
    if na == 1:
        return q
    N, Ana, G = q.shape
    return q.reshape(N, Ana // na, na, G).amax(dim=2)


def _importance(strategy, q, points, gt_cols, inside_cols, N, G, *, k, scope, params, cols=False) -> torch.Tensor:
    """Raw importance ``[N, A]``: the strategy's per-box weights, max over each image's boxes.

    ``q`` ``[N, A, G]`` (or None; ``[A, N*G]`` already when ``cols``), ``gt_cols`` ``[N*G, 4]``,
    ``inside_cols`` ``[A, N*G]``; box ``n*G + g`` is column ``n*G + g`` of the ``[A, N*G]``
    quality matrix.
    """
    A = points.shape[0]
    q_cols = q if q is None or cols else q.permute(1, 0, 2).reshape(A, N * G)
    kind, a, b = box_weights(strategy, q_cols, points, gt_cols, k=k, scope=scope, inside=inside_cols, **params)
    if kind == "sparse":  # a: idx [N*G, K] positions of each box's own image
        offset = (torch.arange(N, device=points.device) * A).repeat_interleave(G)
        out = torch.zeros(N * A, dtype=torch.float32, device=points.device)
        out.scatter_reduce_(0, (a + offset[:, None]).reshape(-1), b.reshape(-1),
                            reduce="amax", include_self=True)
        return out.reshape(N, A)
    return a.reshape(N, G, A).amax(dim=1)  # dense: [N*G, A]


def batch_masks(
    probs: torch.Tensor,
    boxes: torch.Tensor,
    points: torch.Tensor,
    level_sizes: Sequence[int],
    num_anchors: int,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_valid: torch.Tensor,
    *,
    strategy: str = "pgw",
    xi_cls: float,
    xi_reg: float,
    k_cls: int | None,
    k_reg: int | None,
    topk_scope: str = "inside",
    box_gauss_sigma: float = BOX_GAUSS_SIGMA,
    centre_ratio: float = CENTRE_RATIO,
    kde_bandwidth: float | None = None,
    with_inside: bool = False,
) -> dict[str, torch.Tensor]:
    """All PGD masks of a batch, each ``[N, A]`` with the levels concatenated.

    ``probs`` ``[N, A*na, C]`` teacher class probabilities, ``boxes`` ``[N, A*na, 4]`` its
    decoded boxes, ``points`` ``[A, 2]`` the location centres (one per location, shared by
    the batch), ``gt_*`` from :func:`pad_gt`. Returns ``fg_cls`` (``M^cls``, Eq. 4), ``bg``
    (``B`` normalised per level), ``reg`` (raw ``I^reg``), ``quality_cls``
    (``max_g 1[inside] q_cls``, for figures) and ``imp_cls`` (raw ``I^cls``); with
    ``with_inside`` also ``inside`` ``[N, A, G]`` bool (location ``a`` strictly inside box ``g``
    of its image; padding boxes contain nothing), for the masks' per-box statistics.
    """
    strategy = _check_choice("strategy", strategy, STRATEGIES)
    scope = _check_choice("topk_scope", topk_scope, TOPK_SCOPES)
    na = _check_int("num_anchors", num_anchors, lo=1)
    for name, t, nd, last in (("probs", probs, 3, None), ("boxes", boxes, 3, 4), ("points", points, 2, 2),
                              ("gt_boxes", gt_boxes, 3, 4), ("gt_labels", gt_labels, 2, None),
                              ("gt_valid", gt_valid, 2, None)):
        _check_tensor(name, t, ndim=nd, last=last)
    N, Ana, _ = probs.shape
    A = points.shape[0]
    G = gt_boxes.shape[1]
    if Ana != A * na or tuple(boxes.shape[:2]) != (N, Ana) or tuple(gt_labels.shape) != (N, G) \
            or tuple(gt_valid.shape) != (N, G) or gt_boxes.shape[0] != N:
        raise ConfigError(
            f"shape mismatch: probs {tuple(probs.shape)}, boxes {tuple(boxes.shape)}, points "
            f"{tuple(points.shape)} x num_anchors={na}, gt_boxes {tuple(gt_boxes.shape)}, gt_labels "
            f"{tuple(gt_labels.shape)}, gt_valid {tuple(gt_valid.shape)}; need [N, A*na, C], "
            "[N, A*na, 4], [A, 2], [N, G, 4], [N, G], [N, G]"
        )
    ks = {}
    for branch, k in (("cls", k_cls), ("reg", k_reg)):
        if strategy in _NEEDS_K and k is None:
            raise ConfigError(f"strategy {strategy!r} needs k_{branch} (an integer >= 1), got None")
        ks[branch] = None if k is None else _check_int(f"k_{branch}", k, lo=1)
    check_range("xi_cls", xi_cls, lo=0.0, hi=1.0)
    check_range("xi_reg", xi_reg, lo=0.0, hi=1.0)
    xi_cls, xi_reg = float(xi_cls), float(xi_reg)
    check_range("box_gauss_sigma", box_gauss_sigma, lo=0.0, lo_open=True)
    check_range("centre_ratio", centre_ratio, lo=0.0, hi=1.0, lo_open=True)
    if kde_bandwidth is not None:
        check_range("kde_bandwidth", kde_bandwidth, lo=0.0, lo_open=True)
    params = dict(box_gauss_sigma=box_gauss_sigma, centre_ratio=centre_ratio, kde_bandwidth=kde_bandwidth)

    dev = points.device
    p_pts = _f32(points)
    if G == 0 or A == 0:
        zeros = torch.zeros(N, A, device=dev)
        out = dict(fg_cls=zeros, bg=level_normalize(torch.ones(N, A, device=dev), level_sizes), reg=zeros,
                   quality_cls=zeros, imp_cls=zeros)
        if with_inside:
            out["inside"] = torch.zeros(N, A, G, dtype=torch.bool, device=dev)
        return out
    gt = _f32(gt_boxes)
    gt_cols = gt.reshape(N * G, 4)
    valid = gt_valid.to(torch.bool)
    # shared by both branches: p of each GT's class, IoU with each GT box, the inside test
    labels = gt_labels.long().clamp(min=0)
    p = torch.gather(_f32(probs), 2, labels[:, None, :].expand(N, Ana, G)).clamp_(0.0, 1.0)
    iou = batch_box_iou(boxes, gt)  # already in [0, 1]
    inside_cols = _inside_ag(p_pts, gt_cols)  # [A, N*G]
    inside = inside_cols.reshape(A, N, G).permute(1, 0, 2)  # [N, A, G]
    q = {}
    for branch, xi in (("cls", xi_cls), ("reg", xi_reg)):
        if strategy in _NEEDS_QUALITY or branch == "cls":  # Eq. 1 (quality_score's operations)
            qb = _max_over_anchors(p.pow(1.0 - xi) * iou.pow(xi), na)
            q[branch] = torch.where(valid[:, None, :], qb, 0.0)
    imp = _importances(strategy, q if strategy in _NEEDS_QUALITY else None, p_pts, gt_cols, inside_cols,
                       N, G, ks, scope, params)
    q_fig = torch.where(inside, q["cls"], 0.0).amax(dim=2)  # Eq. 1 with its indicator, for figures
    bg = (~inside.any(dim=2)).to(torch.float32)
    fg_cls, bg = level_normalize(torch.stack([imp["cls"], bg]), level_sizes).unbind(0)
    out = dict(fg_cls=fg_cls, bg=bg, reg=imp["reg"], quality_cls=q_fig, imp_cls=imp["cls"])
    if with_inside:
        out["inside"] = inside
    return out


def _importances(strategy, q, points, gt_cols, inside_cols, N, G, ks, scope, params) -> dict:
    """Raw ``I^cls`` and ``I^reg`` ``[N, A]`` (:func:`_importance` per branch), sharing work:
    strategies without quality or K give both branches the same map (computed once); the top-K
    strategies with ``k_cls == k_reg`` select, fit and scatter the two branches' ``2 N G``
    columns in one pass (columns are independent, so the same numbers)."""
    if strategy not in _NEEDS_QUALITY:
        w = _importance(strategy, None, points, gt_cols, inside_cols, N, G, k=ks["cls"], scope=scope,
                        params=params)
        return {"cls": w, "reg": w}
    if strategy in _NEEDS_K and ks["cls"] == ks["reg"]:
        A = points.shape[0]
        q_cols = torch.cat([q["cls"].permute(1, 0, 2), q["reg"].permute(1, 0, 2)], dim=1).reshape(A, 2 * N * G)
        both = _importance(strategy, q_cols, points, gt_cols.repeat(2, 1), inside_cols.repeat(1, 2), 2 * N, G,
                           k=ks["cls"], scope=scope, params=params, cols=True).reshape(2, N, A)
        return {"cls": both[0], "reg": both[1]}
    return {b: _importance(strategy, q[b], points, gt_cols, inside_cols, N, G, k=ks[b], scope=scope, params=params)
            for b in ("cls", "reg")}
