"""The KD baselines of the PGD paper's Table 1: their math, pure torch (no mmdet / mmcv).

One loss function per method, each taking lists over FPN levels and returning its
already-weighted terms as a dict, plus the mask helpers and the two trainable blocks the
methods need (FGD's :class:`GcBlock`, FKD's :class:`NonLocalBlock`). The formulas follow
``shared/spec/kd-baselines.md``; docs/baselines.md lists every difference from the authors'
code. Notation: ``F^S`` student map (already through its adapt conv where the method has
one, unless said), ``F^T`` teacher map, both ``[N, C, H, W]``; sums run over n, c, h, w.

Conventions shared with the rest of ``pgd.core``: teacher features and every mask are
detached here (teacher-side *modules* such as FGD's teacher GcBlock or FKD's teacher
non-local block are trained, as in the authors' code, so they do get gradients); maths in
float32, results in the student features' dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pgd.errors import ConfigError

from .attention import spatial_attention
from .quality import _check_tau, _check_tensor, _check_weight, box_iou_pairs, max_over_anchors

__all__ = [
    "DEFEAT_FINEST_SCALE",
    "GcBlock",
    "NonLocalBlock",
    "box_cells",
    "defeat_loss_terms",
    "fgd_loss_terms",
    "fgd_masks",
    "fgfi_loss_terms",
    "fgfi_mask",
    "fkd_attention_masks",
    "fkd_loss_terms",
    "fpn_level_by_scale",
    "frs_loss_terms",
    "frs_richness",
    "global_channel_attention",
    "legacy_iou_pairs",
]

Module = Callable[[torch.Tensor], torch.Tensor]

# FPN's RoI-to-level rule as mmdet's SingleRoIExtractor implements it: a box of scale
# sqrt(w*h) goes to level floor(log2(scale / 56)), clamped; level 0 is the finest (P3 here).
DEFEAT_FINEST_SCALE = 56.0


# ----------------------------------------------------------------------------- checks
def _check_levels(**lists) -> int:
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
        raise ConfigError(f"per-level lists must be non-empty and of one length, got {lengths}")
    return next(iter(lengths.values()))


def _check_pair(level: int, fs, ft, same_channels: bool = True) -> None:
    _check_tensor(f"feats_s[{level}]", fs, ndim=4)
    _check_tensor(f"feats_t[{level}]", ft, ndim=4)
    a, b = tuple(fs.shape), tuple(ft.shape)
    if (a if same_channels else a[:1] + a[2:]) != (b if same_channels else b[:1] + b[2:]):
        raise ConfigError(
            f"shape mismatch at level {level}: student {a} vs teacher {b}; the student side "
            "needs its adapt conv to the teacher's channels"
        )


def _check_map(name: str, m, fs: torch.Tensor) -> torch.Tensor:
    _check_tensor(name, m, ndim=3)
    N, _, H, W = fs.shape
    if tuple(m.shape) != (N, H, W):
        raise ConfigError(f"{name} has shape {tuple(m.shape)}; it must be [N, H, W] = {[N, H, W]}")
    return m.detach().to(torch.float32)


# ----------------------------------------------------------------------------- boxes -> cells
def box_cells(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[G, H, W]`` bool: the cells of an ``H x W`` map each box covers.

    ``boxes`` ``[G, 4]`` are ``(x1, y1, x2, y2)`` in **cell units** (pixels times the level's
    scale, which the caller chooses). A box covers the cells its extent overlaps: columns
    ``floor(x1) .. ceil(x2) - 1`` and rows likewise, after clipping to the map. A box whose
    clipped extent is empty along an axis covers the one cell holding its clipped corner.
    """
    _check_tensor("boxes", boxes, ndim=2, last=4)
    b = boxes.detach().to(torch.float32)
    dev = b.device

    def axis(lo, hi, size):
        lo, hi = lo.clamp(0, size), hi.clamp(0, size)
        first = lo.floor().clamp(max=size - 1)
        last = torch.maximum(hi.ceil(), first + 1)  # exclusive end, >= one cell
        idx = torch.arange(size, device=dev, dtype=torch.float32)
        return (idx[None] >= first[:, None]) & (idx[None] < last[:, None])

    in_x = axis(b[:, 0], b[:, 2], int(width))  # [G, W]
    in_y = axis(b[:, 1], b[:, 3], int(height))  # [G, H]
    return in_y[:, :, None] & in_x[:, None, :]


# ----------------------------------------------------------------------------- FGD
def _fgd_axis(lo: torch.Tensor, hi: torch.Tensor, size: int, inclusive: bool):
    """Cells of one axis: ``([G, size] bool, [G] unclipped extent in cells)``.

    ``inclusive``: cells ``floor(lo) .. ceil(hi)`` (FGD's code); else ``floor(lo) ..
    max(ceil(hi) - 1, floor(lo))`` (the cells the extent overlaps, at least one). Cells outside
    ``0 .. size - 1`` are dropped from the mask, never from the extent.
    """
    first = lo.floor()
    last = hi.ceil() if inclusive else torch.maximum(hi.ceil() - 1, first)
    idx = torch.arange(int(size), device=lo.device, dtype=torch.float32)
    on = (idx[None] >= first[:, None]) & (idx[None] <= last[:, None])
    return on, (last - first + 1).clamp(min=1)


def fgd_masks(boxes: torch.Tensor, height: int, width: int, *, inclusive: bool = True,
              clipped_area: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FGD's ``(M_fg, M_bg)``, each ``[H, W]``, of one image on one level.

    ``boxes`` ``[G, 4]`` are ``(x1, y1, x2, y2)`` in **cell units** (the caller maps pixels to
    the level). As FGD's code (yzd-v/FGD ``mmdet/distillation/losses/fgd.py`` L93-102), a box
    covers rows ``floor(y1) .. ceil(y2)`` and columns ``floor(x1) .. ceil(x2)``, both ends
    included, and weighs ``1 / (h_cells * w_cells)`` with the **unclipped** extents
    ``h_cells = ceil(y2) - floor(y1) + 1`` (likewise w), so a box leaving the map keeps the
    weight of its whole extent::

        M_fg(h, w) = max over the boxes covering the cell of 1 / (h_cells * w_cells)
        M_bg       = [M_fg == 0] / sum [M_fg == 0]      (all zeros when no cell is background)

    Options (departures from the code, off by default): ``inclusive=False`` covers only the
    cells the box overlaps (``floor(x1) .. ceil(x2) - 1``, at least one); ``clipped_area=True``
    divides by the number of covered cells inside the map instead of the unclipped extent.
    """
    _check_tensor("boxes", boxes, ndim=2, last=4)
    b = boxes.detach().to(torch.float32)
    H, W = int(height), int(width)
    if b.shape[0] == 0:
        fg = torch.zeros(H, W, device=b.device)
    else:
        on_x, ext_x = _fgd_axis(b[:, 0], b[:, 2], W, inclusive)
        on_y, ext_y = _fgd_axis(b[:, 1], b[:, 3], H, inclusive)
        cells = (on_y[:, :, None] & on_x[:, None, :]).to(torch.float32)  # [G, H, W]
        area = cells.flatten(1).sum(1).clamp(min=1) if clipped_area else ext_x * ext_y
        fg = (cells / area[:, None, None]).amax(0)
    bg = (fg == 0).to(torch.float32)
    return fg, bg / bg.sum().clamp(min=1)


def global_channel_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """``C * softmax_c( mean_hw |F| / tau )``: ``[N, C, H, W] -> [N, C]``, one vector per
    image (FGD's and FKD's channel attention; PGD's own is per location,
    :func:`pgd.core.channel_attention`). Each image's weights sum to ``C``."""
    _check_tensor("feat", feat, ndim=4)
    tau = _check_tau(tau)
    C = feat.shape[1]
    s = feat.to(torch.float32).abs().mean(dim=(2, 3)) / tau
    return (C * torch.softmax(s, dim=1)).to(feat.dtype)


class GcBlock(nn.Module):
    """FGD's global-context block ``GC(F)``: ``[N, C, H, W] -> [N, C, 1, 1]``.

    1x1 conv to one channel -> softmax over the H*W positions -> the softmax-weighted sum of
    ``F`` -> 1x1 conv (C -> C/2) -> LayerNorm -> ReLU -> 1x1 conv (C/2 -> C, zero-initialised,
    so ``GC(F) = 0`` until it trains). The global term compares ``F + GC(F)`` of both sides.
    """

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, int(channels) // 2)
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FGD's initialisation: Kaiming-normal (fan-in) mask conv, zero last conv."""
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        weights = torch.softmax(self.conv_mask(x).reshape(N, 1, H * W), dim=2)  # [N, 1, HW]
        context = torch.bmm(x.reshape(N, C, H * W), weights.transpose(1, 2))  # [N, C, 1]
        return self.channel_add(context.reshape(N, C, 1, 1))


def fgd_loss_terms(
    feats_s: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    fg_masks: Sequence[torch.Tensor],
    bg_masks: Sequence[torch.Tensor],
    gc_s: Sequence[Module],
    gc_t: Sequence[Module],
    *,
    temp: float,
    alpha: float,
    beta: float,
    gamma: float,
    lambda_: float,
) -> dict[str, torch.Tensor]:
    """FGD (Yang et al., CVPR 2022), summed over levels; masks ``[N, H, W]`` from :func:`fgd_masks`.

    With ``S = H*W softmax_hw(mean_c |F| / T)`` (:func:`pgd.core.spatial_attention`) and
    ``Cattn`` (:func:`global_channel_attention`) of each side, per level::

        fg     = sum M_fg * S^T * Cattn^T * (F^S - F^T)^2 / N        (bg: M_bg)
        att    = sum |Cattn^S - Cattn^T| / N + sum |S^S - S^T| / N
        global = sum (F^S + GC_S(F^S) - F^T - GC_T(F^T))^2 / N

    Returns ``{"fg": alpha*fg, "bg": beta*bg, "att": gamma*att, "global": lambda_*global}``.
    ``gc_s`` / ``gc_t`` are one :class:`GcBlock` per level and side (both trained).
    """
    L = _check_levels(feats_s=feats_s, feats_t=feats_t, fg_masks=fg_masks, bg_masks=bg_masks,
                      gc_s=gc_s, gc_t=gc_t)
    temp = _check_tau(temp)
    w = {k: _check_weight(k, v) for k, v in dict(alpha=alpha, beta=beta, gamma=gamma, lambda_=lambda_).items()}
    fg = bg = att = glob = 0.0
    for lvl in range(L):
        _check_pair(lvl, feats_s[lvl], feats_t[lvl])
        fs = feats_s[lvl].to(torch.float32)
        ft = feats_t[lvl].detach().to(torch.float32)
        m_fg = _check_map(f"fg_masks[{lvl}]", fg_masks[lvl], fs)
        m_bg = _check_map(f"bg_masks[{lvl}]", bg_masks[lvl], fs)
        N = fs.shape[0]
        s_s, s_t = spatial_attention(fs, temp), spatial_attention(ft, temp)
        c_s, c_t = global_channel_attention(fs, temp), global_channel_attention(ft, temp)
        weighted = (fs - ft) ** 2 * s_t[:, None] * c_t[:, :, None, None]
        fg = fg + (weighted * m_fg[:, None]).sum() / N
        bg = bg + (weighted * m_bg[:, None]).sum() / N
        att = att + (c_s - c_t).abs().sum() / N + (s_s - s_t).abs().sum() / N
        out_s = fs + gc_s[lvl](fs)
        out_t = ft + gc_t[lvl](ft)
        glob = glob + ((out_s - out_t) ** 2).sum() / N
    dt = feats_s[0].dtype
    return {
        "fg": (w["alpha"] * fg).to(dt),
        "bg": (w["beta"] * bg).to(dt),
        "att": (w["gamma"] * att).to(dt),
        "global": (w["lambda_"] * glob).to(dt),
    }


# ----------------------------------------------------------------------------- DeFeat
def fpn_level_by_scale(boxes: torch.Tensor, num_levels: int,
                       finest_scale: float = DEFEAT_FINEST_SCALE) -> torch.Tensor:
    """``[G]`` long: the FPN level of each box, as FPN assigns RoIs (mmdet's rule).

    ``level = clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, num_levels - 1)``; with
    the default 56 and P3..P7: scale < 112 -> P3, [112, 224) -> P4, [224, 448) -> P5,
    [448, 896) -> P6, >= 896 -> P7 (index 0 = the finest level).
    """
    _check_tensor("boxes", boxes, ndim=2, last=4)
    if float(finest_scale) <= 0:
        raise ConfigError(f"finest_scale={finest_scale!r} must be > 0")
    b = boxes.detach().to(torch.float32)
    scale = ((b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)).sqrt()
    lvl = torch.floor(torch.log2(scale / float(finest_scale) + 1e-6))
    return lvl.clamp(0, int(num_levels) - 1).long()


def defeat_loss_terms(
    feats_s: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    fg_masks: Sequence[torch.Tensor],
    *,
    w_fg: float,
    w_bg: float,
) -> dict[str, torch.Tensor]:
    """DeFeat (Guo et al., CVPR 2021); ``feats_s`` already through the 3x3 adapt conv.

    Per level, with the binary ``fg_mask`` ``[N, H, W]`` and ``bg = 1 - fg_mask``::

        fg = sum fg_mask * (F^S - F^T)^2 / max(1, 2 * count(fg_mask) * C)    (bg likewise)

    both averaged over the levels. Returns ``{"fg": w_fg * fg, "bg": w_bg * bg}``.
    """
    L = _check_levels(feats_s=feats_s, feats_t=feats_t, fg_masks=fg_masks)
    w_fg, w_bg = _check_weight("w_fg", w_fg), _check_weight("w_bg", w_bg)
    fg = bg = 0.0
    for lvl in range(L):
        _check_pair(lvl, feats_s[lvl], feats_t[lvl])
        fs = feats_s[lvl].to(torch.float32)
        ft = feats_t[lvl].detach().to(torch.float32)
        m = _check_map(f"fg_masks[{lvl}]", fg_masks[lvl], fs)
        C = fs.shape[1]
        sq = (fs - ft) ** 2
        fg = fg + (sq * m[:, None]).sum() / (2 * m.sum() * C).clamp(min=1)
        bg = bg + (sq * (1 - m)[:, None]).sum() / (2 * (1 - m).sum() * C).clamp(min=1)
    dt = feats_s[0].dtype
    return {"fg": (w_fg * fg / L).to(dt), "bg": (w_bg * bg / L).to(dt)}


# ----------------------------------------------------------------------------- FRS
def frs_richness(cls_logits_t: torch.Tensor) -> torch.Tensor:
    """FRS's feature-richness mask ``R = max over classes (and anchors) of sigmoid(logits)``:
    ``[N, na*K, H, W] -> [N, H, W]``, detached."""
    _check_tensor("cls_logits_t", cls_logits_t, ndim=4)
    return cls_logits_t.detach().to(torch.float32).sigmoid().amax(dim=1)


def frs_loss_terms(
    feats_s: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    cls_logits_s: Sequence[torch.Tensor],
    cls_logits_t: Sequence[torch.Tensor],
    *,
    w_feat: float,
    w_cls: float,
    ramp: float = 1.0,
    bce_from_logits: bool = False,
) -> dict[str, torch.Tensor]:
    """FRS (Du et al., NeurIPS 2021), summed over levels; ``feats_s`` through the 3x3 adapt.

    Per level, with ``R`` = :func:`frs_richness` of the teacher's cls logits::

        feat = sum R * (F^S - F^T)^2 / sum R
        cls  = sum R * BCE(sigmoid(z^S), sigmoid(z^T)) / sum R

    (BCE summed over the classes and anchors). As FRS's code
    (duzhixing/FRS ``detectors/distill_frs_single.py`` L61-70), the BCE is computed on the
    float32 probabilities by ``torch.nn.functional.binary_cross_entropy`` itself (each log
    clamped at -100; autocast is disabled around it, as it refuses to autocast), so a
    saturated student logit (``sigmoid(z) == 1`` in float32, ``z > ~16.6``) costs at most 100
    per class and passes no gradient. ``bce_from_logits=True`` (a departure) uses the exact
    ``binary_cross_entropy_with_logits`` instead (unbounded, ``~|z|``). Returns
    ``{"feat": ramp * w_feat * feat, "cls": ramp * w_cls * cls}``; ``ramp`` in [0, 1] is the
    warm-up factor.
    """
    L = _check_levels(feats_s=feats_s, feats_t=feats_t, cls_logits_s=cls_logits_s, cls_logits_t=cls_logits_t)
    w_feat, w_cls = _check_weight("w_feat", w_feat), _check_weight("w_cls", w_cls)
    ramp = _check_weight("ramp", ramp)
    feat = cls = 0.0
    for lvl in range(L):
        _check_pair(lvl, feats_s[lvl], feats_t[lvl])
        _check_pair(lvl, cls_logits_s[lvl], cls_logits_t[lvl])
        fs = feats_s[lvl].to(torch.float32)
        ft = feats_t[lvl].detach().to(torch.float32)
        r = _check_map(f"richness[{lvl}]", frs_richness(cls_logits_t[lvl]), fs)[:, None]
        norm = r.sum().clamp(min=torch.finfo(torch.float32).tiny)
        zs = cls_logits_s[lvl].to(torch.float32)
        pt = cls_logits_t[lvl].detach().to(torch.float32).sigmoid()
        if bce_from_logits:
            bce = F.binary_cross_entropy_with_logits(zs, pt, reduction="none")
        else:
            with torch.autocast(device_type=zs.device.type, enabled=False):
                bce = F.binary_cross_entropy(zs.sigmoid(), pt, reduction="none")
        feat = feat + (r * (fs - ft) ** 2).sum() / norm
        cls = cls + (r * bce).sum() / norm
    dt = feats_s[0].dtype
    return {"feat": (ramp * w_feat * feat).to(dt), "cls": (ramp * w_cls * cls).to(dt)}


# ----------------------------------------------------------------------------- FGFI
def legacy_iou_pairs(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU with the legacy ``+1`` pixel convention, ``[A, 4] x [G, 4] -> [A, G]``, no grad.

    As FGFI's ``bbox_overlaps_batch`` (twangnh/Distilling-Object-Detectors
    ``lib/model/rpn/bbox_transform.py`` L168-215): widths ``x2 - x1 + 1``, heights
    ``y2 - y1 + 1``, intersection ``min(x2) - max(x1) + 1`` (clamped at 0) per axis; a GT whose
    ``+1`` width and height are both 1 (the code's marker of a padding row) has IoU 0.
    """
    _check_tensor("boxes", boxes, ndim=2, last=4)
    _check_tensor("gt", gt, ndim=2, last=4)
    b = boxes.detach().to(torch.float32)
    g = gt.detach().to(torch.float32)
    bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    gw, gh = g[:, 2] - g[:, 0] + 1, g[:, 3] - g[:, 1] + 1
    iw = (torch.minimum(b[:, None, 2], g[None, :, 2]) - torch.maximum(b[:, None, 0], g[None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(b[:, None, 3], g[None, :, 3]) - torch.maximum(b[:, None, 1], g[None, :, 1]) + 1).clamp(min=0)
    inter = iw * ih
    iou = inter / ((bw * bh)[:, None] + (gw * gh)[None, :] - inter)
    return iou.masked_fill(((gw == 1) & (gh == 1))[None, :], 0.0)


def fgfi_mask(anchors: torch.Tensor, gt_boxes: torch.Tensor, num_anchors: int,
              ratio: float = 0.5, *, legacy_iou: bool = True) -> torch.Tensor:
    """``[A]`` bool: FGFI's imitation mask of one image over its locations.

    ``anchors`` ``[A*na, 4]`` (all levels, mmdet's (h, w, anchor) order), ``gt_boxes``
    ``[G, 4]``. For each GT the anchors with ``IoU > ratio * (that GT's best anchor IoU)``
    are on; a location is on if any of its ``na`` anchors is; union over the GTs (FGFI's
    ``anchor_target_layer.py`` L103-115). A GT that overlaps no anchor at all (best IoU 0)
    selects nothing. The IoU is :func:`legacy_iou_pairs` (the code's ``+1`` convention);
    ``legacy_iou=False`` (a departure) uses the plain IoU :func:`pgd.core.box_iou_pairs`.
    """
    _check_tensor("anchors", anchors, ndim=2, last=4)
    _check_tensor("gt_boxes", gt_boxes, ndim=2, last=4)
    if not 0 < float(ratio) <= 1:
        raise ConfigError(f"ratio={ratio!r} must lie in (0, 1]")
    if gt_boxes.shape[0] == 0:
        return torch.zeros(anchors.shape[0] // int(num_anchors), dtype=torch.bool, device=anchors.device)
    iou = (legacy_iou_pairs if legacy_iou else box_iou_pairs)(anchors, gt_boxes).to(torch.float32)  # [A*na, G]
    best = iou.amax(dim=0, keepdim=True)
    on = (iou > ratio * best) & (best > 0)
    return max_over_anchors(on.any(dim=1).to(torch.float32), int(num_anchors)) > 0


def fgfi_loss_terms(
    feats_s: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    *,
    weight: float,
    zero_without_mask: bool = True,
) -> dict[str, torch.Tensor]:
    """FGFI (Wang et al., CVPR 2019); ``feats_s`` through the adapt conv; masks ``[N, H, W]``.

    One normaliser over all levels and images of the batch (FGFI's ``trainval_net_sup.py``
    L378-385)::

        feat = sum_levels sum mask * (F^S - F^T)^2 / (2 * count(mask))

    With no cell in any mask (a batch without GT boxes) the code divides 0 by 0 (NaN, which
    would poison every later step); ``zero_without_mask=True`` (the default, a departure)
    returns 0 there instead, ``False`` returns the code's NaN. Returns ``{"feat": weight * feat}``.
    """
    L = _check_levels(feats_s=feats_s, feats_t=feats_t, masks=masks)
    weight = _check_weight("weight", weight)
    total = count = 0.0
    for lvl in range(L):
        _check_pair(lvl, feats_s[lvl], feats_t[lvl])
        fs = feats_s[lvl].to(torch.float32)
        ft = feats_t[lvl].detach().to(torch.float32)
        m = _check_map(f"masks[{lvl}]", masks[lvl], fs)
        total = total + (m[:, None] * (fs - ft) ** 2).sum()
        count = count + m.sum()
    norm = (2 * count).clamp(min=1) if zero_without_mask else 2 * count
    return {"feat": (weight * total / norm).to(feats_s[0].dtype)}


# ----------------------------------------------------------------------------- FKD
def fkd_attention_masks(feat_s: torch.Tensor, feat_t: torch.Tensor,
                        temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FKD's masks: the mean of the teacher's and the student's attention, detached.

    Spatial ``H*W softmax_hw(mean_c |F| / t)`` -> ``[N, H, W]`` and channel
    ``C softmax_c(mean_hw |F| / t)`` -> ``[N, C]``; both sides need the same C.
    """
    _check_pair(0, feat_s, feat_t)
    fs = feat_s.detach().to(torch.float32)
    ft = feat_t.detach().to(torch.float32)
    spatial = (spatial_attention(ft, temp) + spatial_attention(fs, temp)) / 2
    channel = (global_channel_attention(ft, temp) + global_channel_attention(fs, temp)) / 2
    return spatial, channel


class NonLocalBlock(nn.Module):
    """The non-local block of FKD's relation term (dot-product form, as in FKD's code).

    ``z = x + W(y)``, ``y = (theta(x)^T phi(x) / M) g(x)`` with 1x1 convs ``theta``, ``phi``,
    ``g`` to ``inter_channels`` (default C/2), ``phi`` and ``g`` max-pooled by
    ``downsample_stride`` (M positions after pooling; ``ceil_mode`` so tiny maps keep one
    cell), and ``W`` = 1x1 conv + BatchNorm with the BN zero-initialised (``z = x`` at first).
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None, downsample_stride: int = 2):
        super().__init__()
        self.inter_channels = max(1, int(inter_channels or in_channels // 2))
        ci = self.inter_channels
        pool = nn.MaxPool2d(kernel_size=downsample_stride, stride=downsample_stride, ceil_mode=True)
        self.theta = nn.Conv2d(in_channels, ci, kernel_size=1)
        self.phi = nn.Sequential(nn.Conv2d(in_channels, ci, kernel_size=1), pool)
        self.g = nn.Sequential(nn.Conv2d(in_channels, ci, kernel_size=1), pool)
        self.W = nn.Sequential(nn.Conv2d(ci, in_channels, kernel_size=1), nn.BatchNorm2d(in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        ci = self.inter_channels
        g_x = self.g(x).reshape(N, ci, -1).transpose(1, 2)  # [N, M, ci]
        theta_x = self.theta(x).reshape(N, ci, -1).transpose(1, 2)  # [N, HW, ci]
        phi_x = self.phi(x).reshape(N, ci, -1)  # [N, ci, M]
        f = torch.bmm(theta_x, phi_x) / phi_x.shape[-1]
        y = torch.bmm(f, g_x).transpose(1, 2).reshape(N, ci, H, W)
        return x + self.W(y)


def fkd_loss_terms(
    feats_s: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    *,
    adapt: Sequence[Module],
    channel_adapt: Sequence[Module],
    spatial_adapt: Sequence[Module],
    nl_s: Sequence[Module],
    nl_t: Sequence[Module],
    nl_adapt: Sequence[Module],
    temp: float,
    w_feat: float,
    w_channel: float,
    w_spatial: float,
    w_relation: float,
    channel_mask: bool = True,
) -> dict[str, torch.Tensor]:
    """FKD (Zhang & Ma, ICLR 2021) as its public code computes it, summed over levels.

    ``feats_s`` are the **raw** student maps; the per-level trainable modules are passed in:
    ``adapt`` (1x1 conv), ``channel_adapt`` (Linear C_s -> C_t), ``spatial_adapt`` (3x3 conv,
    1 -> 1 channel), ``nl_s`` / ``nl_t`` (:class:`NonLocalBlock` of each side) and
    ``nl_adapt`` (1x1 conv). With ``||.||`` the L2 norm over the whole batch tensor (the
    code's ``torch.dist``) and the masks ``P, Q`` of :func:`fkd_attention_masks` (computed
    from the raw student map, or from ``adapt(F^S)`` when the channel counts differ)::

        feat     = || (F^T - adapt(F^S)) * sqrt(P * Q) ||
        channel  = || mean_hw F^T - channel_adapt(mean_hw F^S) ||
        spatial  = || mean_c F^T - spatial_adapt(mean_c F^S) ||
        relation = || nl_adapt(nl_s(F^S)) - nl_t(F^T) ||

    The feature term weighs by both masks, ``P`` and ``Q``, as the paper's attention-masked
    loss and the supplementary code's ``dist2(..., attention_mask, channel_attention_mask)``;
    ``channel_mask=False`` (MMRazor's ``FBKDLoss`` port) drops ``Q``: ``|| (F^T - adapt(F^S))
    sqrt(P) ||``. Returns ``{"feat": w_feat*feat, "channel": w_channel*channel, "spatial":
    w_spatial*spatial, "relation": w_relation*relation}``.
    """
    L = _check_levels(feats_s=feats_s, feats_t=feats_t, adapt=adapt, channel_adapt=channel_adapt,
                      spatial_adapt=spatial_adapt, nl_s=nl_s, nl_t=nl_t, nl_adapt=nl_adapt)
    temp = _check_tau(temp)
    w = {k: _check_weight(k, v) for k, v in
         dict(w_feat=w_feat, w_channel=w_channel, w_spatial=w_spatial, w_relation=w_relation).items()}
    norm = torch.linalg.vector_norm  # its gradient at 0 is 0, unlike sum(.) ** 0.5
    feat = channel = spatial = relation = 0.0
    for lvl in range(L):
        _check_pair(lvl, feats_s[lvl], feats_t[lvl], same_channels=False)
        fs = feats_s[lvl].to(torch.float32)
        ft = feats_t[lvl].detach().to(torch.float32)
        fa = adapt[lvl](fs)
        _check_pair(lvl, fa, ft)
        p, q = fkd_attention_masks(fs if fs.shape[1] == ft.shape[1] else fa, ft, temp)
        mask = p[:, None] * q[:, :, None, None] if channel_mask else p[:, None].expand_as(ft)
        feat = feat + norm((ft - fa) * mask.sqrt())
        channel = channel + norm(ft.mean(dim=(2, 3)) - channel_adapt[lvl](fs.mean(dim=(2, 3))))
        spatial = spatial + norm(ft.mean(dim=1, keepdim=True) - spatial_adapt[lvl](fs.mean(dim=1, keepdim=True)))
        relation = relation + norm(nl_adapt[lvl](nl_s[lvl](fs)) - nl_t[lvl](ft))
    dt = feats_s[0].dtype
    return {
        "feat": (w["w_feat"] * feat).to(dt),
        "channel": (w["w_channel"] * channel).to(dt),
        "spatial": (w["w_spatial"] * spatial).to(dt),
        "relation": (w["w_relation"] * relation).to(dt),
    }
