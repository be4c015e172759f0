"""Prediction-guided weighting (spec section 3, paper Eq. 2-4), background mask, level norm.

Vectorised over GT boxes: an ``[A, G]`` masked score matrix built from two small per-axis
tables, a two-stage (block-max) top-K per box, a closed-form 2x2 eigen-decomposition per
box for the pseudo-inverse, and a scatter-max into ``[A]``. No Python loop over boxes or
positions, no random jitter.
"""

from __future__ import annotations

import numbers

import torch

from pgd.config.names import TOPK_SCOPES
from pgd.errors import ConfigError

from .quality import _check_choice, _check_int, _check_tensor, _f32, _out_dtype

__all__ = [
    "TOPK_SCOPES",
    "PINV_RTOL",
    "inside_mask",
    "background_mask",
    "pgw_importance",
    "level_normalize",
]


#: Relative eigenvalue threshold of the pseudo-inverse: an eigenvalue of Sigma below
#: ``PINV_RTOL * lambda_max`` is treated as zero (the 2x2 part runs in float64).
PINV_RTOL = 1e-9
#: The same threshold where float64 is unavailable (Apple MPS): float32 rounding of the
#: covariance is ~1e-7 relative, so smaller eigenvalues are indistinguishable from 0.
PINV_RTOL_F32 = 1e-5


# ----------------------------------------------------------------------------- checks
def _check_points_boxes(points, gt_boxes) -> None:
    _check_tensor("points", points, ndim=2, last=2)
    _check_tensor("gt_boxes", gt_boxes, ndim=2, last=4)


def _check_quality(quality, points, gt_boxes) -> None:
    _check_tensor("quality", quality, ndim=2)
    want = (points.shape[0], gt_boxes.shape[0])
    if tuple(quality.shape) != want:
        raise ConfigError(
            f"shape mismatch: quality has shape {tuple(quality.shape)} but points [A, 2] and "
            f"gt_boxes [G, 4] require [A, G] = {list(want)}"
        )


# ----------------------------------------------------------------------------- masks
def _inside_ga(points: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``[G, A]`` bool: point a strictly inside box g (x1 < x < x2 and y1 < y < y2)."""
    x = points[:, 0][None, :]
    y = points[:, 1][None, :]
    return (
        (x > gt[:, 0:1]) & (x < gt[:, 2:3]) & (y > gt[:, 1:2]) & (y < gt[:, 3:4])
    )


#: Below this many boxes the four direct comparisons are cheaper than the factorised test.
_FACTORISE_MIN_BOXES = 16
#: The same for the bool test alone (:func:`_inside_ag`; the batched masks' ``N*G`` columns):
#: factorised from this many boxes and at least ``8 G`` points (1 CPU thread: at 538 points
#: the direct test wins up to G = 512; at 5,000 points from G = 64; at 22,400 from G = 32..64).
_FACTORISE_MIN_BOXES_BOOL = 64


def _axis_tables(points: torch.Tensor, gt: torch.Tensor):
    """Factorise the open-interval tests ``lo_g < c_a < hi_g`` of both axes.

    Per axis, with ``E`` the sorted interval ends (``2G`` values), every coordinate falls in
    one of ``4G + 1`` classes: strictly between two consecutive ends (code ``2l``) or equal
    to ``E[l]`` (code ``2l + 1``), ``l`` being the number of ends below it. All coordinates
    of a class compare the same way with every end, so the test is a ``[4G + 1, G]`` table
    indexed by the class. With ``r(v)`` = the number of ends below ``v``:
    ``lo_g < c  <=>  r(lo_g) < l`` and ``c < hi_g  <=>  r(hi_g) >= l + (c equals E[l])``.
    Returns ``code`` ``[2, A]`` and ``table`` ``[2, 4G + 1, G]`` bool (x then y). Exact
    (comparisons and ranks only), ``O(A log G)``.
    """
    c = points.t().contiguous()  # [2, A]
    lo = gt[:, 0:2].t().contiguous()  # [2, G]: x1, y1
    hi = gt[:, 2:4].t().contiguous()  # [2, G]: x2, y2
    E, _ = torch.sort(torch.cat([lo, hi], dim=1), dim=1)  # [2, 2G]
    n = E.shape[1]
    below = torch.searchsorted(E, c, right=False)  # [2, A] ends < c
    equal = torch.gather(E, 1, below.clamp(max=n - 1)) == c  # c equals E[below]
    code = 2 * below + equal.to(below.dtype)
    cls = torch.arange(2 * n + 1, device=c.device)
    cls_below = (cls // 2)[None, :, None]  # [1, 4G + 1, 1]
    cls_equal = (cls % 2)[None, :, None]
    r_lo = torch.searchsorted(E, lo, right=False)[:, None, :]  # [2, 1, G]
    r_hi = torch.searchsorted(E, hi, right=False)[:, None, :]
    table = (r_lo < cls_below) & (r_hi >= cls_below + cls_equal)
    return code, table


def _inside_ag(points: torch.Tensor, gt: torch.Tensor, factorise: bool | None = None):
    """``[A, G]`` bool, the same test as :func:`_inside_ga`, laid out for per-box columns.

    ``factorise`` (default from ``G >= 64`` and ``A >= 8 G``) gathers the two small
    :func:`_axis_tables` tables back to the points instead of four ``[A, G]`` comparisons;
    identical result.
    """
    if factorise is None:
        G = gt.shape[0]
        factorise = G >= _FACTORISE_MIN_BOXES_BOOL and points.shape[0] >= 8 * G
    if not factorise:
        x = points[:, 0:1]
        y = points[:, 1:2]
        m = x > gt[:, 0]
        m &= x < gt[:, 2]
        m &= y > gt[:, 1]
        m &= y < gt[:, 3]
        return m
    code, table = _axis_tables(points, gt)
    m = torch.index_select(table[0], 0, code[0])
    m &= torch.index_select(table[1], 0, code[1])
    return m


def _inside_scores(q: torch.Tensor, points: torch.Tensor, gt: torch.Tensor,
                   factorise: bool | None = None) -> torch.Tensor:
    """``[A, G]``: ``q`` where the point is strictly inside the box, ``-inf`` elsewhere.

    Factorised (default from ``G >= 16``): per-axis penalties (0 inside the box's range,
    -inf outside) gathered to the points and added to ``q``. Equal to the direct
    ``where(inside, q, -inf)``.
    """
    if factorise is None:
        factorise = gt.shape[0] >= _FACTORISE_MIN_BOXES
    if not factorise:
        return torch.where(_inside_ag(points, gt, factorise=False), q, float("-inf"))
    code, table = _axis_tables(points, gt)
    n_cls = table.shape[1]
    pen = torch.zeros(2 * n_cls, table.shape[2], dtype=q.dtype, device=q.device)
    pen.masked_fill_(~table.reshape(2 * n_cls, -1), float("-inf"))
    # one fused gather-and-sum of the x and y penalty rows: a single [A, G] buffer
    rows = torch.stack([code[0], code[1] + n_cls], dim=1)  # [A, 2]
    score = torch.nn.functional.embedding_bag(rows, pen, mode="sum")
    score.add_(q)
    return score


def inside_mask(points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """``[A, G]`` bool: prior centre a lies strictly inside GT box g (spec section 2)."""
    _check_points_boxes(points, gt_boxes)
    return _inside_ga(_f32(points), _f32(gt_boxes)).t()


def background_mask(points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """``[A]``: 1.0 where the point lies strictly inside no GT box, else 0.0 (spec 3).

    Not yet normalised per level (use :func:`level_normalize`). ``G = 0`` gives all ones.
    Returned in ``points``' dtype (float32 for integer points).
    """
    _check_points_boxes(points, gt_boxes)
    A = points.shape[0]
    if gt_boxes.shape[0] == 0:
        return torch.ones(A, dtype=_out_dtype(points), device=points.device)
    any_inside = _inside_ga(_f32(points), _f32(gt_boxes)).any(dim=0)
    return (~any_inside).to(_out_dtype(points))


def level_normalize(weights: torch.Tensor, level_sizes) -> torch.Tensor:
    """Divide each level's weights by that level's count of non-zero weights (Eq. 4).

    ``weights`` is ``[..., A]`` with the levels concatenated along the last dimension in
    the order of ``level_sizes`` (their sum must be ``A``); leading dimensions (e.g. a
    batch) are normalised independently. A level without a non-zero weight stays 0.
    float32 inside, returned in ``weights``' dtype.
    """
    _check_tensor("weights", weights)
    if weights.dim() == 0:
        raise ConfigError("weights must have at least one dimension [..., A], got a scalar")
    if isinstance(level_sizes, (str, bytes)) or not hasattr(level_sizes, "__iter__"):
        raise ConfigError(f"level_sizes must be a list of integers, got {level_sizes!r}")
    sizes = []
    for s in level_sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ConfigError(
                f"level_sizes must be non-negative integers, got {list(level_sizes)!r} "
                f"(bad entry {s!r})"
            )
        sizes.append(int(s))
    if sum(sizes) != weights.shape[-1]:
        raise ConfigError(
            f"level_sizes {sizes} sum to {sum(sizes)} but weights has {weights.shape[-1]} "
            f"positions in its last dimension (shape {tuple(weights.shape)})"
        )
    if not sizes:
        return weights
    w = weights.detach().to(torch.float32)
    lengths = torch.tensor(sizes, device=w.device)
    level_of = torch.repeat_interleave(torch.arange(len(sizes), device=w.device), lengths)
    nz = (w != 0).to(torch.float32)
    counts = torch.zeros(*w.shape[:-1], len(sizes), device=w.device)
    counts.index_add_(w.dim() - 1, level_of, nz)
    per_pos = counts.index_select(w.dim() - 1, level_of).clamp(min=1.0)
    return (w / per_pos).to(_out_dtype(weights))


# ----------------------------------------------------------------------------- top-K
#: Block size of the two-stage top-K (see :func:`_topk_columns`).
_TOPK_BLOCK = 64
#: Below this many columns (boxes) a plain ``torch.topk`` is cheaper than the two stages.
_TOPK_BLOCK_MIN_COLS = 32


def _topk_columns(score: torch.Tensor, kmax: int, two_stage: bool | None = None):
    """Top-``kmax`` of every column of ``score`` ``[A, G]``: ``(values, indices)`` ``[G, kmax]``.

    For large ``A`` a two-stage search: the first ``nb * B`` rows are cut into ``nb``
    blocks of ``B = _TOPK_BLOCK``; the ``kmax`` blocks with the largest maxima, plus the
    ``A - nb * B < B`` tail rows, hold a top-``kmax`` set (a block holding a top element
    has a larger max than all but fewer than ``kmax`` blocks), and the final top-``kmax``
    runs on those ``kmax * B + tail`` candidates. Same values as ``torch.topk``; only the
    order among exactly tied values can differ.
    """
    A, G = score.shape
    B = _TOPK_BLOCK
    if two_stage is None:
        two_stage = G >= _TOPK_BLOCK_MIN_COLS
    if not two_stage or A < 8 * B or kmax * B * 2 > A:
        vals, idx = torch.topk(score, kmax, dim=0, largest=True, sorted=False)
        return vals.t(), idx.t()
    nb = A // B
    blocks = score[: nb * B].view(nb, B, G)
    _, bidx = torch.topk(blocks.amax(dim=1), kmax, dim=0, largest=True, sorted=False)
    bidx = bidx.t()  # [G, kmax]
    cols = torch.arange(G, device=score.device)[:, None].expand(G, kmax)
    cand = blocks[bidx, :, cols].reshape(G, kmax * B)  # [G, kmax * B]
    if nb * B < A:
        cand = torch.cat([cand, score[nb * B:].t()], dim=1)
    vals, j = torch.topk(cand, kmax, dim=1, largest=True, sorted=False)
    in_block = j < kmax * B
    jb = j.clamp(max=kmax * B - 1)
    from_block = torch.gather(bidx, 1, jb // B) * B + jb % B
    idx = torch.where(in_block, from_block, nb * B + (j - kmax * B))
    return vals, idx


def _select_topk(q: torch.Tensor, points: torch.Tensor, gt: torch.Tensor, k: int, scope: str, inside=None):
    """Per-box top-K selection (spec section 3 steps 1-2), all boxes at once.

    ``q`` ``[A, G]`` float32, ``points`` ``[A, 2]`` and ``gt`` ``[G, 4]`` float32; ``inside``
    ``[A, G]`` bool, the inside test when the caller has it already (:func:`_inside_ag`).
    Returns ``idx`` ``[G, Kmax]`` (position indices), ``valid`` ``[G, Kmax]`` bool (the
    entry is one of the box's K = min(k, #candidates) selected positions) and ``keep``
    ``[G, Kmax]`` bool (the selected position may receive weight: ``valid`` for
    ``inside``; strictly inside the box for ``all``, which applies the inside rule after
    the fit, as the released code does).
    """
    A = points.shape[0]
    kmax = min(k, A)
    if scope == "inside":
        score = _inside_scores(q, points, gt) if inside is None else torch.where(inside, q, float("-inf"))
        vals, idx = _topk_columns(score, kmax)
        valid = vals != float("-inf")
        return idx, valid, valid
    _, idx = _topk_columns(q, kmax)
    sel = points[idx]  # [G, Kmax, 2]
    keep = (
        (sel[..., 0] > gt[:, 0:1]) & (sel[..., 0] < gt[:, 2:3])
        & (sel[..., 1] > gt[:, 1:2]) & (sel[..., 1] < gt[:, 3:4])
    )
    return idx, torch.ones_like(keep), keep


def _small_dtype(device: torch.device) -> tuple[torch.dtype, float]:
    """dtype and pseudo-inverse threshold of the per-box 2x2 algebra."""
    if device.type == "mps":
        return torch.float32, PINV_RTOL_F32
    return torch.float64, PINV_RTOL


def _moments(x: torch.Tensor, valid: torch.Tensor):
    """Masked ML mean and covariance of ``x`` ``[G, K, 2]`` over the ``valid`` entries.

    Returns ``d`` (centred coordinates, 0 where invalid), ``n`` [G] (count, >= 1) and the
    covariance entries ``a = S_xx, b = S_xy, c = S_yy`` ([G] each), Sigma = (1/K) sum d d^T.
    """
    v = valid.to(x.dtype)
    n = v.sum(dim=1).clamp(min=1.0)
    mu = (x * v[..., None]).sum(dim=1) / n[:, None]
    d = (x - mu[:, None, :]) * v[..., None]
    a = (d[..., 0] * d[..., 0]).sum(dim=1) / n
    b = (d[..., 0] * d[..., 1]).sum(dim=1) / n
    c = (d[..., 1] * d[..., 1]).sum(dim=1) / n
    return d, n, mu, a, b, c


def _pinv_quadratic(d: torch.Tensor, a, b, c, rtol: float, scale=None) -> torch.Tensor:
    """``d^T Sigma^+ d`` for ``Sigma = [[a, b], [b, c]]`` per box, ``d`` ``[G, ..., 2]``.

    Closed-form eigen-decomposition of the symmetric 2x2: ``lambda_1 >= lambda_2 >= 0`` with
    eigenvector angle ``theta = atan2(2b, a - c) / 2`` for ``lambda_1``. The pseudo-inverse
    keeps ``1/lambda_i`` only for ``lambda_1 > 0`` and ``lambda_2 > rtol * lambda_1``, so
    ``K = 1`` (Sigma = 0) gives 0 and collinear points give the distance along their line.
    ``scale`` multiplies Sigma (the KDE bandwidth), [G] or None.
    """
    half_tr = 0.5 * (a + c)
    disc = torch.hypot(0.5 * (a - c), b)
    l1 = half_tr + disc
    l2 = (half_tr - disc).clamp(min=0.0)
    if scale is not None:
        l1 = l1 * scale
        l2 = l2 * scale
    theta = 0.5 * torch.atan2(2.0 * b, a - c)
    cos, sin = torch.cos(theta), torch.sin(theta)
    tiny = torch.finfo(d.dtype).tiny
    ok1 = l1 > tiny
    ok2 = ok1 & (l2 > rtol * l1)
    inv1 = torch.where(ok1, 1.0 / l1.clamp(min=tiny), 0.0)
    inv2 = torch.where(ok2, 1.0 / l2.clamp(min=tiny), 0.0)
    extra = d.dim() - 2  # broadcast the per-box scalars over the middle dims
    shape = (-1,) + (1,) * extra
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    inv1, inv2 = inv1.reshape(shape), inv2.reshape(shape)
    u1 = d[..., 0] * cos + d[..., 1] * sin
    u2 = d[..., 1] * cos - d[..., 0] * sin
    return u1 * u1 * inv1 + u2 * u2 * inv2


def _gaussian_weights(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 2-3: ML Gaussian of the selected positions, ``exp(-0.5 d^T Sigma^+ d)``.

    ``x`` ``[G, K, 2]`` float32 coordinates, ``valid`` ``[G, K]``. Returns ``[G, K]``
    float32, 0 where invalid.
    """
    dt, rtol = _small_dtype(x.device)
    d, _, _, a, b, c = _moments(x.to(dt), valid)
    m = _pinv_quadratic(d, a, b, c, rtol)
    return (torch.exp(-0.5 * m) * valid.to(dt)).to(torch.float32)


def _scatter_max(A: int, idx: torch.Tensor, w: torch.Tensor, device) -> torch.Tensor:
    """``[A]`` max over boxes of the per-box weights (0 where no box selects a position)."""
    out = torch.zeros(A, dtype=torch.float32, device=device)
    if idx.numel():
        out.scatter_reduce_(0, idx.reshape(-1), w.reshape(-1), reduce="amax", include_self=True)
    return out


def pgw_importance(
    quality: torch.Tensor,
    points: torch.Tensor,
    gt_boxes: torch.Tensor,
    k: int,
    topk_scope: str = "inside",
) -> torch.Tensor:
    """Raw PGW importance ``I`` ``[A]`` of one image (spec section 3 steps 1-5).

    ``quality`` ``[A, G]`` is Eq. 1 *without* the indicator (this function applies the
    inside rule per ``topk_scope``); ``points`` ``[A, 2]`` are prior centres in pixels with
    levels concatenated; ``gt_boxes`` ``[G, 4]`` x1y1x2y2 pixels.

    - ``inside`` (default): the K = min(k, #inside) highest-quality positions strictly
      inside the box are selected; a box with no inside position contributes nothing.
    - ``all``: the K = min(k, A) highest-quality positions over the whole image are
      selected and the Gaussian fitted to them; positions outside the box then get 0.

    Each selected position gets ``exp(-0.5 d^T Sigma^+ d)`` with the ML mean/covariance of
    the selection and the pseudo-inverse (K = 1 gives 1; collinear selections give the
    distance along their line); other positions 0; max over boxes. Ties in quality are
    resolved by ``torch.topk``. No gradient; float32 inside, returned in ``quality``'s dtype.
    """
    _check_points_boxes(points, gt_boxes)
    _check_quality(quality, points, gt_boxes)
    k = _check_int("k", k, lo=1)
    scope = _check_choice("topk_scope", topk_scope, TOPK_SCOPES)
    A, G = quality.shape
    dtype = _out_dtype(quality)
    if G == 0 or A == 0:
        return torch.zeros(A, dtype=dtype, device=quality.device)
    p = _f32(points)
    idx, valid, keep = _select_topk(_f32(quality), p, _f32(gt_boxes), k, scope)
    w = _gaussian_weights(p[idx], valid) * keep.to(torch.float32)
    return _scatter_max(A, idx, w, quality.device).to(dtype)
