"""PGD distillation losses of one FPN level (spec section 5, paper Eq. 5, 6, 8, 9).

``pgd_cls_loss_terms`` / ``pgd_reg_loss_terms`` hold the math and return the already
weighted terms ``{"fea": ..., "att": ...}``; ``pgd_cls_loss`` / ``pgd_reg_loss`` are
exactly their sum. Teacher features and the masks are detached here; the student's
features (and so its attention) carry gradient. float32 inside, results in the student
features' dtype.
"""

from __future__ import annotations

import torch

from pgd.errors import ConfigError

from .attention import channel_attention, spatial_attention
from .quality import _check_tau, _check_tensor, _check_weight

__all__ = ["pgd_cls_loss_terms", "pgd_cls_loss", "pgd_reg_loss_terms", "pgd_reg_loss"]


def _check_pair(feat_s, feat_t) -> None:
    _check_tensor("feat_s", feat_s, ndim=4)
    _check_tensor("feat_t", feat_t, ndim=4)
    if tuple(feat_s.shape) != tuple(feat_t.shape):
        raise ConfigError(
            f"shape mismatch: feat_s has shape {tuple(feat_s.shape)} but feat_t has shape "
            f"{tuple(feat_t.shape)}; add a 1x1 adaptation conv on the student when C differs"
        )


def _check_mask(name: str, mask, feat_s: torch.Tensor) -> None:
    _check_tensor(name, mask)
    N, _, H, W = feat_s.shape
    if tuple(mask.shape) != (N, H, W):
        raise ConfigError(
            f"shape mismatch: {name} has shape {tuple(mask.shape)} but must be [N, H, W] = "
            f"{[N, H, W]} for features of shape {tuple(feat_s.shape)} (one mask per image)"
        )


def pgd_cls_loss_terms(
    feat_s: torch.Tensor,
    feat_t: torch.Tensor,
    fg: torch.Tensor,
    bg: torch.Tensor,
    alpha: float,
    beta: float,
    delta: float,
    tau: float,
    level_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Weighted terms of ``L_cls`` for one level (spec section 5).

    ``E_n = sum_c P^T A^T (F^S - F^T)^2``; ``fg = (1/N) sum M_n E_n``; ``bg = (1/N) sum B_n E_n``;
    ``att = sum|A^S - A^T| / (N H W) + sum|P^S - P^T| / N``.
    Returns ``{"fea": level_weight * (alpha*fg + beta*bg), "att": delta * att}``.
    ``fg`` / ``bg`` are the level-normalised masks ``[N, H, W]`` (each image's own).
    """
    _check_pair(feat_s, feat_t)
    _check_mask("fg", fg, feat_s)
    _check_mask("bg", bg, feat_s)
    alpha = _check_weight("alpha", alpha)
    beta = _check_weight("beta", beta)
    delta = _check_weight("delta", delta)
    level_weight = _check_weight("level_weight", level_weight)
    tau = _check_tau(tau)
    N, _, H, W = feat_s.shape
    fs = feat_s.to(torch.float32)
    ft = feat_t.detach().to(torch.float32)
    m_fg = fg.detach().to(torch.float32)
    m_bg = bg.detach().to(torch.float32)

    p_s, p_t = spatial_attention(fs, tau), spatial_attention(ft, tau)
    a_s, a_t = channel_attention(fs, tau), channel_attention(ft, tau)
    e = (p_t[:, None] * a_t * (fs - ft) ** 2).sum(dim=1)  # [N, H, W]
    fg_term = (m_fg * e).sum() / N
    bg_term = (m_bg * e).sum() / N
    att = (a_s - a_t).abs().sum() / (N * H * W) + (p_s - p_t).abs().sum() / N
    out_dtype = feat_s.dtype
    return {
        "fea": (level_weight * (alpha * fg_term + beta * bg_term)).to(out_dtype),
        "att": (delta * att).to(out_dtype),
    }


def pgd_cls_loss(feat_s, feat_t, fg, bg, alpha, beta, delta, tau, level_weight=1.0):
    """``L_cls,l = w_l (alpha fg + beta bg) + delta att_cls`` (scalar); see the ``_terms``."""
    t = pgd_cls_loss_terms(feat_s, feat_t, fg, bg, alpha, beta, delta, tau, level_weight)
    return t["fea"] + t["att"]


def pgd_reg_loss_terms(
    feat_s: torch.Tensor,
    feat_t: torch.Tensor,
    reg_importance: torch.Tensor,
    gamma: float,
    delta: float,
    tau: float,
) -> dict[str, torch.Tensor]:
    """Weighted terms of ``L_reg`` for one level (spec section 5).

    ``reg_importance`` is the **raw** PGW importance ``I^reg`` ``[N, H, W]``;
    ``S = {(n, h, w): I^reg != 0}``;
    ``fea = (1/|S|) sum_S I * mean_c(A^T (F^S - F^T)^2)``,
    ``att = (1/|S|) sum_S sum_c |A^S - A^T|``.
    Returns ``{"fea": gamma * fea, "att": delta * att}``; both are exactly 0 (still
    connected to ``feat_s`` for autograd) when ``S`` is empty.
    """
    _check_pair(feat_s, feat_t)
    _check_mask("reg_importance", reg_importance, feat_s)
    gamma = _check_weight("gamma", gamma)
    delta = _check_weight("delta", delta)
    tau = _check_tau(tau)
    out_dtype = feat_s.dtype
    imp = reg_importance.detach().to(torch.float32)
    sel = imp != 0
    # |S| clamped to 1: with S empty both sums are exactly 0 and still depend on feat_s
    # (through A^S), so no host sync is needed to special-case it.
    n_sel = sel.sum().clamp(min=1).to(torch.float32)
    fs = feat_s.to(torch.float32)
    ft = feat_t.detach().to(torch.float32)
    a_s, a_t = channel_attention(fs, tau), channel_attention(ft, tau)
    fea_map = (a_t * (fs - ft) ** 2).mean(dim=1)  # [N, H, W]
    att_map = (a_s - a_t).abs().sum(dim=1)  # [N, H, W]
    fea = torch.where(sel, imp * fea_map, 0.0).sum() / n_sel
    att = torch.where(sel, att_map, 0.0).sum() / n_sel
    return {"fea": (gamma * fea).to(out_dtype), "att": (delta * att).to(out_dtype)}


def pgd_reg_loss(feat_s, feat_t, reg_importance, gamma, delta, tau):
    """``L_reg,l = gamma fea + delta att_reg`` (scalar, 0 when no position is selected)."""
    t = pgd_reg_loss_terms(feat_s, feat_t, reg_importance, gamma, delta, tau)
    return t["fea"] + t["att"]
