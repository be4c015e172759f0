"""Foreground weighting strategies of paper Table 5 (spec section 6).

Each strategy only produces the raw foreground importance ``I`` ``[A]`` of one image (max
over its GT boxes); level normalisation, background mask, attention and losses are the
same for all of them. See docs/core.md for the parameter choices.
"""

from __future__ import annotations

import torch

from pgd.config.defaults import BOX_GAUSS_SIGMA, CENTRE_RATIO
from pgd.config.names import STRATEGIES
from pgd.errors import ConfigError, check_range

from .pgw import (
    TOPK_SCOPES,
    _check_points_boxes,
    _check_quality,
    _gaussian_weights,
    _inside_ga,
    _moments,
    _pinv_quadratic,
    _scatter_max,
    _select_topk,
    _small_dtype,
)
from .quality import _check_choice, _check_int, _f32, _out_dtype

__all__ = [
    "STRATEGIES",
    "BOX_GAUSS_SIGMA",
    "CENTRE_RATIO",
    "foreground_weights",
]


_NEEDS_QUALITY = ("quality", "topk_eq", "kde", "pgw")
_NEEDS_K = ("topk_eq", "kde", "pgw")


def _kde_weights(x: torch.Tensor, valid: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
    """Gaussian KDE over each box's selected positions, evaluated at those positions.

    Kernel ``exp(-0.5 d^T H^+ d)`` with ``H = h^2 Sigma`` (Sigma the ML covariance of the
    selection, as in PGW) and ``h = K^(-1/6)`` (Scott's rule in 2-D) unless ``bandwidth``
    gives ``h``. Density = mean over the K kernels; scaled so the box's highest selected
    position gets 1 (as a position at mu gets 1 under PGW). ``[G, K]`` float32.
    """
    dt, rtol = _small_dtype(x.device)
    xd = x.to(dt)
    _, n, _, a, b, c = _moments(xd, valid)
    h2 = n.pow(-1.0 / 3.0) if bandwidth is None else torch.full_like(n, float(bandwidth) ** 2)
    diff = xd[:, :, None, :] - xd[:, None, :, :]  # [G, K(eval), K(kernel), 2]
    m = _pinv_quadratic(diff, a, b, c, rtol, scale=h2)
    v = valid.to(dt)
    dens = (torch.exp(-0.5 * m) * v[:, None, :]).sum(dim=2) / n[:, None] * v
    peak = dens.amax(dim=1, keepdim=True)
    w = torch.where(peak > 0, dens / peak.clamp(min=torch.finfo(dt).tiny), 0.0)
    return w.to(torch.float32)


def foreground_weights(
    strategy: str,
    *,
    quality: torch.Tensor | None = None,
    points: torch.Tensor,
    gt_boxes: torch.Tensor,
    k: int | None = None,
    topk_scope: str = "inside",
    box_gauss_sigma: float = BOX_GAUSS_SIGMA,
    centre_ratio: float = CENTRE_RATIO,
    kde_bandwidth: float | None = None,
) -> torch.Tensor:
    """Raw foreground importance ``[A]`` of one image under one of :data:`STRATEGIES`.

    - ``box``: 1 strictly inside any GT box.
    - ``box_gauss``: ``exp(-0.5 ((x-cx)^2/sx^2 + (y-cy)^2/sy^2))`` inside the box, with
      ``sx = box_gauss_sigma * w``, ``sy = box_gauss_sigma * h`` (default 1/6).
    - ``centre``: 1 strictly inside the central ``centre_ratio*w x centre_ratio*h`` region.
    - ``quality``: ``q`` itself inside the box (no top-K).
    - ``topk_eq``: 1 on the box's top-K positions (same selection as ``pgw``).
    - ``kde``: Gaussian KDE over the top-K positions (see :func:`_kde_weights`), 0 elsewhere.
    - ``pgw``: :func:`pgd.core.pgw.pgw_importance`.

    ``quality`` ``[A, G]`` (without the indicator) is required by ``quality``, ``topk_eq``,
    ``kde`` and ``pgw``, and ``k`` by the last three; ``topk_scope`` applies to those three.
    Max over boxes; returned in the dtype of ``quality`` (or ``points`` when not needed).
    """
    strategy = _check_choice("strategy", strategy, STRATEGIES)
    _check_points_boxes(points, gt_boxes)
    scope = _check_choice("topk_scope", topk_scope, TOPK_SCOPES)
    if strategy in _NEEDS_QUALITY:
        if quality is None:
            raise ConfigError(f"strategy {strategy!r} needs quality [A, G], got None")
        _check_quality(quality, points, gt_boxes)
    if strategy in _NEEDS_K:
        if k is None:
            raise ConfigError(f"strategy {strategy!r} needs k (an integer >= 1), got None")
        k = _check_int("k", k, lo=1)
    elif k is not None:
        k = _check_int("k", k, lo=1)
    check_range("box_gauss_sigma", box_gauss_sigma, lo=0.0, lo_open=True)
    check_range("centre_ratio", centre_ratio, lo=0.0, hi=1.0, lo_open=True)
    if kde_bandwidth is not None:
        check_range("kde_bandwidth", kde_bandwidth, lo=0.0, lo_open=True)

    ref = quality if strategy in _NEEDS_QUALITY else points
    dtype = _out_dtype(ref)
    A, G = points.shape[0], gt_boxes.shape[0]
    if G == 0 or A == 0:
        return torch.zeros(A, dtype=dtype, device=points.device)
    q = _f32(quality) if strategy in _NEEDS_QUALITY else None
    kind, a, b = box_weights(strategy, q, _f32(points), _f32(gt_boxes), k=k, scope=scope,
                             box_gauss_sigma=box_gauss_sigma, centre_ratio=centre_ratio,
                             kde_bandwidth=kde_bandwidth)
    if kind == "sparse":
        return _scatter_max(A, a, b, points.device).to(dtype)
    return a.amax(dim=0).to(dtype)


def box_weights(strategy: str, q, p: torch.Tensor, g: torch.Tensor, *, k, scope: str,
                box_gauss_sigma: float, centre_ratio: float, kde_bandwidth, inside=None):
    """Per-box weights of one strategy, before the max over boxes (arguments checked).

    ``q`` ``[A, M]`` float32 (or None), ``p`` ``[A, 2]``, ``g`` ``[M, 4]`` float32, ``M >= 1``
    boxes that may come from several images (columns are independent; the batched masks of
    :mod:`pgd.core.masks` pass every image's boxes at once). Returns either
    ``("sparse", idx [M, K], w [M, K])`` (top-K strategies: weight ``w`` at position ``idx``)
    or ``("dense", w [M, A], None)``; every weight is ``>= 0`` and 0 outside the box, so a
    box that contains no position (e.g. a zero-size padding box) contributes nothing.
    ``inside``: the ``[A, M]`` strict inside test when the caller has it (else computed).
    """
    if strategy in ("topk_eq", "kde", "pgw"):
        idx, valid, keep = _select_topk(q, p, g, k, scope, inside)
        if strategy == "pgw":
            w = _gaussian_weights(p[idx], valid)
        elif strategy == "kde":
            w = _kde_weights(p[idx], valid, kde_bandwidth)
        else:
            w = valid.to(torch.float32)
        return "sparse", idx, w * keep.to(torch.float32)

    inside = _inside_ga(p, g) if inside is None else inside.t()  # [M, A]
    if strategy == "box":
        return "dense", inside.to(torch.float32), None
    if strategy == "quality":
        return "dense", torch.where(inside, q.t().clamp(min=0.0), 0.0), None
    cx = 0.5 * (g[:, 0:1] + g[:, 2:3])
    cy = 0.5 * (g[:, 1:2] + g[:, 3:4])
    w_box = (g[:, 2:3] - g[:, 0:1]).clamp(min=0.0)
    h_box = (g[:, 3:4] - g[:, 1:2]).clamp(min=0.0)
    dx = p[:, 0][None, :] - cx
    dy = p[:, 1][None, :] - cy
    if strategy == "centre":
        r = float(centre_ratio)
        central = (dx.abs() < 0.5 * r * w_box) & (dy.abs() < 0.5 * r * h_box)
        return "dense", (inside & central).to(torch.float32), None
    s = float(box_gauss_sigma)  # box_gauss
    sx = (s * w_box).clamp(min=1e-6)
    sy = (s * h_box).clamp(min=1e-6)
    gauss = torch.exp(-0.5 * ((dx / sx) ** 2 + (dy / sy) ** 2))
    return "dense", torch.where(inside, gauss, 0.0), None
