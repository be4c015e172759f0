"""PGD distillation losses of one FPN level (spec section 5, paper Eq. 5, 6, 8, 9).

``pgd_cls_loss_terms`` / ``pgd_reg_loss_terms`` hold the math and return the already
weighted terms ``{"fea": ..., "att": ...}``; ``pgd_cls_loss`` / ``pgd_reg_loss`` are
exactly their sum. ``pgd_cls_loss_levels`` / ``pgd_reg_loss_levels`` compute the same
terms summed over the levels from the levels concatenated (one set of kernels per branch). Teacher features and the masks are detached here; the student's
features (and so its attention) carry gradient. float32 inside, results in the student
features' dtype.
"""

from __future__ import annotations

import torch

from pgd.errors import ConfigError

from .attention import channel_attention, spatial_attention
from .quality import _check_tau, _check_tensor, _check_weight

__all__ = [
    "pgd_cls_loss_terms",
    "pgd_cls_loss",
    "pgd_reg_loss_terms",
    "pgd_reg_loss",
    "pgd_cls_loss_levels",
    "pgd_reg_loss_levels",
]


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


# ----------------------------------------------------------------------------- all levels at once
def _concat_levels(feats_s, feats_t, masks, names):
    """Levels flattened and concatenated: ``[N, C, P]`` features, ``[N, P]`` masks, sizes."""
    if not len(feats_s) or len(feats_s) != len(feats_t):
        raise ConfigError(f"need one student and one teacher map per level, got {len(feats_s)} and {len(feats_t)}")
    sizes = []
    for lvl, (fs, ft) in enumerate(zip(feats_s, feats_t)):
        _check_pair(fs, ft)
        if fs.shape[:2] != feats_s[0].shape[:2]:
            raise ConfigError(f"level {lvl} has shape {tuple(fs.shape)}; every level needs [N, C] = "
                              f"{list(feats_s[0].shape[:2])}")
        sizes.append(fs.shape[2] * fs.shape[3])
    N = feats_s[0].shape[0]
    flat = []
    for name, m in zip(names, masks):
        _check_tensor(name, m, ndim=2)
        if tuple(m.shape) != (N, sum(sizes)):
            raise ConfigError(f"shape mismatch: {name} has shape {tuple(m.shape)} but must be [N, P] = "
                              f"{[N, sum(sizes)]} (levels concatenated, sizes {sizes})")
        flat.append(m.detach().to(torch.float32))
    fs = torch.cat([f.to(torch.float32).flatten(2) for f in feats_s], dim=2)
    ft = torch.cat([f.detach().to(torch.float32).flatten(2) for f in feats_t], dim=2)
    return fs, ft, flat, sizes


def _per_position(values, sizes, device) -> torch.Tensor:
    """``[P]``: each level's value repeated over its positions."""
    v = torch.tensor([float(x) for x in values], device=device)
    return torch.repeat_interleave(v, torch.tensor(sizes, device=device), output_size=sum(sizes))


def _spatial_levels(f: torch.Tensor, sizes, tau: float) -> torch.Tensor:
    """:func:`spatial_attention` of every level of ``[N, C, P]``: ``[N, P]``, each level's
    map summing to its ``H*W`` (a softmax per level segment)."""
    return _spatial_from_abs(f.abs(), sizes, tau)[0]


def _spatial_from_abs(f_abs: torch.Tensor, sizes, tau: float):
    """``(P, u)`` from ``|F|`` ``[N, C, P]``: ``u`` the per-level softmax of ``mean_c |F| / tau``
    and ``P = H_l W_l u`` (both ``[N, P]``)."""
    s = f_abs.mean(dim=1) / tau
    u = torch.cat([torch.softmax(x, dim=1) for x in torch.split(s, sizes, dim=1)], dim=1)
    return torch.cat([hw * x for x, hw in zip(torch.split(u, sizes, dim=1), sizes)], dim=1), u


class _FeatureAttentionTerms(torch.autograd.Function):
    """The two weighted terms of a PGD branch on its levels concatenated, with a hand-written
    backward (one graph node instead of ~40; the teacher's side is a constant).

    Inputs: the student's ``F^S`` ``[N, C, P]`` (the only input with gradient), the teacher's
    ``F^T`` and channel softmax ``s^T = softmax_c(|F^T| / tau)`` (``A^T = C s^T``),
    per-position weights ``w_fea``, ``w_att`` ``[N, P]`` (or ``[P]``; the caller folds the
    factor ``C`` of ``A = C s`` into them), and for the cls branch the teacher's spatial
    attention ``P^T`` ``[N, P]`` with its weight ``w_sp`` (a number)::

        fea = sum_{n,c,i} w_fea[n,i] s^T (F^S - F^T)^2           (= sum w_fea/C A^T (F^S - F^T)^2)
        att = sum_{n,i} w_att[n,i] sum_c |s^S - s^T| + w_sp sum_{n,i} |P^S - P^T|
                                                               (= sum w_att/C sum_c |A^S - A^T| + ...)

    with ``s^S = softmax_c(|F^S| / tau)`` and ``P^S = H_l W_l softmax_{i in l}(mean_c |F^S| / tau)``.
    Gradients (``u = P^S / (H_l W_l)``, ``sign(0) = 0`` as autograd's ``abs``)::

        d fea / d F^S = 2 w_fea s^T (F^S - F^T)
        d att / d F^S = sign(F^S) / tau * (s^S (G - sum_c G s^S) + (u (g - sum_{i in l} g u)) / C)
        G = w_att sign(s^S - s^T),   g = w_sp H_l W_l sign(P^S - P^T)
    """

    @staticmethod
    def forward(ctx, fs, ft, s_t, w_fea, w_att, p_t, w_sp, sizes, tau):
        d = fs - ft
        kd = (s_t * w_fea.unsqueeze(-2)).mul_(d)  # w_fea s^T (F^S - F^T)
        fea = (kd * d).sum()  # torch's cascade sum: float32 dot / bmm accumulation drifts ~1e-5 at 640 px
        f_abs = fs.abs()
        s = torch.softmax(f_abs / tau, dim=1)
        diff_c = s - s_t
        att = (diff_c.abs().sum(dim=1) * w_att).sum()
        u = diff_s = None
        if p_t is not None:
            p_s, u = _spatial_from_abs(f_abs, sizes, tau)
            diff_s = p_s - p_t
            att = att + w_sp * diff_s.abs().sum()
        ctx.save_for_backward(fs, kd, s, diff_c, w_att, u, diff_s)
        ctx.sizes, ctx.tau, ctx.w_sp = sizes, tau, w_sp
        return fea, att

    @staticmethod
    def backward(ctx, g_fea, g_att):
        fs, kd, s, diff_c, w_att, u, diff_s = ctx.saved_tensors
        C = fs.shape[1]
        tau = ctx.tau
        big = (w_att * (g_att / tau)).unsqueeze(-2) * torch.sign(diff_c)  # G / tau
        gz = big.mul_(s)
        gz = gz.sub_(s * gz.sum(dim=1, keepdim=True))  # s (G - sum_c G s) / tau
        if u is not None:
            sizes = ctx.sizes
            gu = torch.sign(diff_s).mul_(g_att * ctx.w_sp / (C * tau))
            gu = torch.cat([x * hw for x, hw in zip(torch.split(gu, sizes, dim=1), sizes)], dim=1).mul_(u)
            seg = torch.cat([x.sum(dim=1, keepdim=True).expand(-1, hw) for x, hw in
                             zip(torch.split(gu, sizes, dim=1), sizes)], dim=1)
            gz = gz.add_(gu.sub_(u * seg).unsqueeze(1))
        grad = gz.mul_(torch.sign(fs)).add_(kd * (2.0 * g_fea))
        return grad, None, None, None, None, None, None, None, None


def pgd_cls_loss_levels(feats_s, feats_t, fg, bg, alpha, beta, delta, tau, level_weights) -> dict[str, torch.Tensor]:
    """:func:`pgd_cls_loss_terms` summed over the levels, computed on the levels concatenated.

    ``feats_*`` are lists over levels of ``[N, C, H_l, W_l]``; ``fg`` / ``bg`` ``[N, P]`` the
    level-normalised masks with the levels concatenated (``P = sum_l H_l W_l``). With ``l(i)``
    the level of position ``i``::

        fea = sum_i w_l(i) (alpha fg_i + beta bg_i) E_i / N,   E = sum_c P^T A^T (F^S - F^T)^2
        att = sum_i sum_c |A^S - A^T|_i / (N H_l(i) W_l(i)) + sum_i |P^S - P^T|_i / N

    (``P`` the per-level spatial attention, ``A`` the per-location channel attention), the
    same numbers as the per-level sum to float rounding, in one autograd node
    (:class:`_FeatureAttentionTerms`).
    """
    alpha, beta, delta = (_check_weight(n, v) for n, v in (("alpha", alpha), ("beta", beta), ("delta", delta)))
    tau = _check_tau(tau)
    fs, ft, (m_fg, m_bg), sizes = _concat_levels(feats_s, feats_t, (fg, bg), ("fg", "bg"))
    if len(level_weights) != len(sizes):
        raise ConfigError(f"level_weights has {len(level_weights)} entries for {len(sizes)} levels")
    lw = [_check_weight("level_weight", w) for w in level_weights]
    N = fs.shape[0]
    dev = fs.device
    with torch.no_grad():
        ft_abs = ft.abs()
        p_t = _spatial_from_abs(ft_abs, sizes, tau)[0]
        s_t = torch.softmax(ft_abs / tau, dim=1)
        C = fs.shape[1]
        w_pos = _per_position([w * C / N for w in lw], sizes, dev)
        w_fea = (alpha * m_fg + beta * m_bg) * w_pos * p_t
        w_att = _per_position([delta * C / (N * s) for s in sizes], sizes, dev)
    fea, att = _FeatureAttentionTerms.apply(fs, ft, s_t, w_fea, w_att, p_t, delta / N, sizes, tau)
    dt = feats_s[0].dtype
    return {"fea": fea.to(dt), "att": att.to(dt)}


def pgd_reg_loss_levels(feats_s, feats_t, reg_importance, gamma, delta, tau) -> dict[str, torch.Tensor]:
    """:func:`pgd_reg_loss_terms` summed over the levels, on the levels concatenated.

    ``reg_importance`` ``[N, P]`` raw ``I^reg``; ``S_l`` the non-zero positions of level
    ``l`` (over the batch)::

        fea = sum_i [i in S] I_i mean_c(A^T (F^S - F^T)^2)_i / max(|S_l(i)|, 1)
        att = sum_i [i in S] sum_c |A^S - A^T|_i / max(|S_l(i)|, 1)

    A level with ``S_l`` empty adds exactly 0 (still connected to the student's features);
    one autograd node (:class:`_FeatureAttentionTerms`).
    """
    gamma, delta = _check_weight("gamma", gamma), _check_weight("delta", delta)
    tau = _check_tau(tau)
    fs, ft, (imp,), sizes = _concat_levels(feats_s, feats_t, (reg_importance,), ("reg_importance",))
    dev = fs.device
    with torch.no_grad():
        sel = imp != 0
        level_of = torch.repeat_interleave(torch.arange(len(sizes), device=dev),
                                           torch.tensor(sizes, device=dev), output_size=sum(sizes))
        counts = torch.zeros(len(sizes), device=dev).index_add_(0, level_of, sel.sum(dim=0).to(torch.float32))
        inv_n = 1.0 / counts.clamp(min=1.0).index_select(0, level_of)  # [P]
        s_t = torch.softmax(ft.abs() / tau, dim=1)
        w_fea = imp * (inv_n * gamma)  # I = 0 outside S; mean_c A^T = sum_c s^T
        w_att = sel.to(torch.float32) * (inv_n * (delta * fs.shape[1]))
    fea, att = _FeatureAttentionTerms.apply(fs, ft, s_t, w_fea, w_att, None, 0.0, sizes, tau)
    dt = feats_s[0].dtype
    return {"fea": fea.to(dt), "att": att.to(dt)}
